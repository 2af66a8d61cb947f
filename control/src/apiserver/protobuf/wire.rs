//! The protobuf wire format: reading a message into its (field number, value) pairs and writing
//! tags, varints and length-delimited fields. Malformed input is an error, never a panic.

/// One field value as it appears on the wire.
#[derive(Debug, Clone, Copy)]
pub(super) enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
}

fn read_varint(buf: &mut &[u8]) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first().ok_or("truncated varint")?;
        *buf = rest;
        value |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(value);
        }
    }
    Err("varint longer than 10 bytes".into())
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if buf.len() < n {
        return Err(format!("truncated field: {n} bytes announced, {} left", buf.len()));
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

/// The fields of a message, in wire order.
pub(super) fn fields(mut buf: &[u8]) -> Result<Vec<(u32, Wire<'_>)>, String> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let key = read_varint(&mut buf)?;
        let number =
            u32::try_from(key >> 3).map_err(|_| format!("field number {} too large", key >> 3))?;
        let value = match key & 7 {
            0 => Wire::Varint(read_varint(&mut buf)?),
            1 => {
                Wire::Fixed64(u64::from_le_bytes(take(&mut buf, 8)?.try_into().unwrap_or_default()))
            }
            2 => {
                let len = usize::try_from(read_varint(&mut buf)?).map_err(|_| "length overflow")?;
                Wire::Bytes(take(&mut buf, len)?)
            }
            5 => {
                Wire::Fixed32(u32::from_le_bytes(take(&mut buf, 4)?.try_into().unwrap_or_default()))
            }
            wire => return Err(format!("unsupported wire type {wire} for field {number}")),
        };
        out.push((number, value));
    }
    Ok(out)
}

/// The varints of a packed repeated field.
pub(super) fn packed_varints(mut buf: &[u8]) -> Result<Vec<u64>, String> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        out.push(read_varint(&mut buf)?);
    }
    Ok(out)
}

/// Appends a varint.
pub(super) fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends a varint field.
pub(super) fn put_varint_field(out: &mut Vec<u8>, number: u32, value: u64) {
    put_varint(out, u64::from(number) << 3);
    put_varint(out, value);
}

/// Appends a length-delimited field.
pub(super) fn put_bytes_field(out: &mut Vec<u8>, number: u32, data: &[u8]) {
    put_varint(out, u64::from(number) << 3 | 2);
    put_varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

/// Appends a 64-bit fixed field (doubles).
pub(super) fn put_fixed64_field(out: &mut Vec<u8>, number: u32, value: u64) {
    put_varint(out, u64::from(number) << 3 | 1);
    out.extend_from_slice(&value.to_le_bytes());
}

/// Appends a 32-bit fixed field (floats).
pub(super) fn put_fixed32_field(out: &mut Vec<u8>, number: u32, value: u32) {
    put_varint(out, u64::from(number) << 3 | 5);
    out.extend_from_slice(&value.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_it_writes_and_rejects_truncation() {
        let mut out = Vec::new();
        put_varint_field(&mut out, 1, 300);
        put_bytes_field(&mut out, 2, b"abc");
        put_fixed64_field(&mut out, 3, 1.5f64.to_bits());
        put_fixed32_field(&mut out, 200, 7);
        put_varint_field(&mut out, 4, u64::MAX);
        let got = fields(&out).unwrap();
        assert!(matches!(got[0], (1, Wire::Varint(300))));
        assert!(matches!(got[1], (2, Wire::Bytes(b"abc"))));
        assert!(matches!(got[2], (3, Wire::Fixed64(b)) if f64::from_bits(b) == 1.5));
        assert!(matches!(got[3], (200, Wire::Fixed32(7))));
        assert!(matches!(got[4], (4, Wire::Varint(u64::MAX))));
        assert!(fields(&out[..out.len() - 1]).is_err());
        assert!(fields(b"\x12\x05ab").is_err());
        assert!(fields(b"\x0b").is_err(), "group wire types are refused");
    }
}
