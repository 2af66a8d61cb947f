#!/usr/bin/env python3
"""Prints the proto fields of the vendored Kubernetes protos whose Go field is a pointer.

Go writes a non-pointer field to protobuf even when it is zero, so a decoder cannot tell "unset"
from "zero" on the wire; only for pointer fields is a present zero meaningful (replicas: 0,
enableServiceLinks: false, maxUnavailable: 0). Usage: k8s-pointer-fields.py PROTO_DIR GO_DIR
"""
import os
import re
import sys

proto_dir, go_dir = sys.argv[1], sys.argv[2]
field_types = {}
packages = {}
for dirpath, _, files in os.walk(proto_dir):
    for name in files:
        if not name.endswith(".proto"):
            continue
        text = open(os.path.join(dirpath, name)).read()
        pkg = re.search(r"^package ([\w.]+);", text, re.M).group(1)
        packages[os.path.relpath(dirpath, proto_dir)] = pkg
        text = re.sub(r"//.*", "", text)
        for msg in re.finditer(r"^message (\w+) \{(.*?)^\}", text, re.M | re.S):
            for label, typ, field, _ in re.findall(
                r"(?:^|\n)\s*(optional|repeated)?\s*([\w.<>, ]+?)\s+(\w+)\s*=\s*(\d+)", msg.group(2)
            ):
                field_types[f"{pkg}.{msg.group(1)}.{field}"] = (label, typ.strip())
out = set()
for rel, pkg in packages.items():
    go_pkg = os.path.join(go_dir, rel)
    if not os.path.isdir(go_pkg):
        continue
    for name in os.listdir(go_pkg):
        if not name.endswith(".go") or name.endswith("_test.go"):
            continue
        text = open(os.path.join(go_pkg, name)).read()
        for struct in re.finditer(r"^type (\w+) struct \{(.*?)^\}", text, re.M | re.S):
            for line in struct.group(2).split("\n"):
                m = re.match(
                    r'\s*\w+\s+\*[\w.\[\]]+\s+`[^`]*protobuf:"\w+,\d+,\w+,name=(\w+)', line
                )
                if not m:
                    continue
                key = f"{pkg}.{struct.group(1)}.{m.group(1)}"
                if key in field_types:
                    out.add(key)
print("\n".join(sorted(out)))
