//! The CEL cost budget: no expression may keep a request busy. The interpreter has no cost
//! hook, so each compiled expression is instrumented instead: every step of a comprehension
//! (`all`, `exists`, `map`, `filter`, …) first calls `@skerry_cost(n)`, which charges the step's
//! size `n` to a budget held by the evaluating thread and fails once the budget is spent. A
//! spent budget makes every later step fail before its body runs, so even nested loops over
//! large lists unwind in time linear in the outer list, and the evaluation reports the
//! reference's `operation cancelled: actual cost limit exceeded`.
//!
//! The instrumentation keeps the shapes the interpreter optimises (`map`/`filter` building
//! their list in place, `all`/`exists` absorbing errors), wrapping the step's body in
//! `@skerry_cost(n) ? body : null`, so an exhausted budget short-circuits the body.
//!
//! Limits, as the reference's: 1,000,000 per expression (`PerCallLimit`) and 10,000,000 for all
//! expressions of one policy evaluation (`RuntimeCELCostBudget`); plus a wall-clock bound as a
//! last resort. Costs approximate the reference's (one unit per node evaluated); not done: the
//! reference's estimated cost check when a policy is written.

use std::cell::Cell;
use std::time::{Duration, Instant};

use cel::common::ast::{operators, CallExpr, ComprehensionExpr, EntryExpr, Expr, LiteralValue};
use cel::common::types::{CelBool, CelInt, INT_TYPE};
use cel::common::value::CowVal;
use cel::{DeclarationError, Env, ExecutionError, IdedExpr};

/// The reference's per-expression runtime cost limit.
pub(super) const PER_EXPRESSION_LIMIT: u64 = 1_000_000;
/// The reference's runtime cost budget for one policy evaluation.
pub(super) const PER_EVALUATION_BUDGET: u64 = 10_000_000;
/// How long one expression may run whatever its cost.
const WALL_CLOCK_LIMIT: Duration = Duration::from_secs(2);

/// The reference's error for an expression over its limit.
pub(super) const COST_EXCEEDED: &str = "operation cancelled: actual cost limit exceeded";

const COST_FN: &str = "@skerry_cost";

/// The budget of the expression being evaluated on this thread.
#[derive(Clone, Copy)]
struct Budget {
    remaining: u64,
    deadline: Instant,
    exceeded: bool,
}

thread_local! {
    static BUDGET: Cell<Option<Budget>> = const { Cell::new(None) };
}

/// `@skerry_cost(n)`: charges `n`, true while within budget (always true when unmetered).
fn charge<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let n = args.first().and_then(|a| a.downcast_ref::<CelInt>()).map_or(1, |n| *n.inner());
    let within = BUDGET.with(|cell| {
        let Some(mut budget) = cell.get() else { return true };
        let cost = u64::try_from(n).unwrap_or(1);
        if budget.exceeded || cost > budget.remaining || Instant::now() > budget.deadline {
            budget.exceeded = true;
            budget.remaining = 0;
        } else {
            budget.remaining -= cost;
        }
        cell.set(Some(budget));
        !budget.exceeded
    });
    if within {
        Ok(CowVal::owned(CelBool::from(true)))
    } else {
        Err(ExecutionError::function_error(COST_FN, COST_EXCEEDED))
    }
}

pub(super) fn register(env: &mut Env) -> Result<(), DeclarationError> {
    env.add_overload(COST_FN, "skerry_cost_int", vec![INT_TYPE], charge)
}

/// What running an expression cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Spent {
    pub cost: u64,
    /// The limit ran out (the result is not to be used).
    pub exceeded: bool,
}

/// Runs `f` (one expression of `base` nodes) with `limit` cost units.
pub(super) fn metered<T>(limit: u64, base: u64, f: impl FnOnce() -> T) -> (T, Spent) {
    if base > limit {
        return (f_skipped(f), Spent { cost: limit, exceeded: true });
    }
    let budget = Budget {
        remaining: limit - base,
        deadline: Instant::now() + WALL_CLOCK_LIMIT,
        exceeded: false,
    };
    let outer = BUDGET.with(|cell| cell.replace(Some(budget)));
    let out = f();
    let after = BUDGET.with(|cell| cell.replace(outer)).unwrap_or(budget);
    (out, Spent { cost: limit - after.remaining, exceeded: after.exceeded })
}

/// Runs `f` with a budget already spent, so its loops stop at once.
fn f_skipped<T>(f: impl FnOnce() -> T) -> T {
    let spent = Budget { remaining: 0, deadline: Instant::now(), exceeded: true };
    let outer = BUDGET.with(|cell| cell.replace(Some(spent)));
    let out = f();
    BUDGET.with(|cell| cell.set(outer));
    out
}

/// The number of nodes of `expr`, the cost of evaluating it once without loops.
pub(super) fn size(expr: &IdedExpr) -> u64 {
    let mut n = 1u64;
    match &expr.expr {
        Expr::Call(call) => {
            n += call.target.as_deref().map_or(0, size);
            n += call.args.iter().map(size).sum::<u64>();
        }
        Expr::Comprehension(c) => {
            n += [&c.iter_range, &c.accu_init, &c.loop_cond, &c.loop_step, &c.result]
                .into_iter()
                .map(size)
                .sum::<u64>();
        }
        Expr::List(list) => n += list.elements.iter().map(size).sum::<u64>(),
        Expr::Map(map) => n += map.entries.iter().map(|e| entry_size(&e.expr)).sum::<u64>(),
        Expr::Struct(s) => n += s.entries.iter().map(|e| entry_size(&e.expr)).sum::<u64>(),
        Expr::Select(select) => n += size(&select.operand),
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
    n
}

fn entry_size(entry: &EntryExpr) -> u64 {
    match entry {
        EntryExpr::MapEntry(e) => size(&e.key) + size(&e.value),
        EntryExpr::StructField(f) => size(&f.value),
    }
}

fn node(expr: Expr) -> IdedExpr {
    IdedExpr { id: 0, expr }
}

/// `@skerry_cost(cost) ? body : null`.
fn guarded(body: IdedExpr, cost: u64) -> IdedExpr {
    let charge = node(Expr::Call(CallExpr {
        func_name: COST_FN.to_string(),
        target: None,
        args: vec![node(Expr::Literal(LiteralValue::Int(CelInt::from(cost as i64))))],
    }));
    node(Expr::Call(CallExpr {
        func_name: operators::CONDITIONAL.to_string(),
        target: None,
        args: vec![charge, body, node(Expr::Literal(LiteralValue::Null))],
    }))
}

/// `expr` with every comprehension step charged to the budget.
pub(super) fn instrument(mut expr: IdedExpr) -> IdedExpr {
    visit(&mut expr);
    expr
}

fn visit(expr: &mut IdedExpr) {
    match &mut expr.expr {
        Expr::Call(call) => {
            if let Some(target) = call.target.as_deref_mut() {
                visit(target);
            }
            call.args.iter_mut().for_each(visit);
        }
        Expr::Comprehension(c) => {
            for part in [&mut c.iter_range, &mut c.accu_init, &mut c.loop_cond, &mut c.result] {
                visit(part);
            }
            visit(&mut c.loop_step);
            charge_step(c);
        }
        Expr::List(list) => list.elements.iter_mut().for_each(visit),
        Expr::Map(map) => map.entries.iter_mut().for_each(|e| visit_entry(&mut e.expr)),
        Expr::Struct(s) => s.entries.iter_mut().for_each(|e| visit_entry(&mut e.expr)),
        Expr::Select(select) => visit(&mut select.operand),
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

fn visit_entry(entry: &mut EntryExpr) {
    match entry {
        EntryExpr::MapEntry(e) => {
            visit(&mut e.key);
            visit(&mut e.value);
        }
        EntryExpr::StructField(f) => visit(&mut f.value),
    }
}

/// Charges each iteration of `c` before its body runs, keeping the step's shape.
fn charge_step(c: &mut ComprehensionExpr) {
    let cost = size(&c.loop_step) + size(&c.loop_cond);
    let accu = c.accu_var.clone();
    let is_accu = |e: &IdedExpr| matches!(&e.expr, Expr::Ident(name) if *name == accu);
    let Expr::Call(call) = &mut c.loop_step.expr else {
        let step = std::mem::take(&mut c.loop_step);
        c.loop_step = guarded(step, cost);
        return;
    };
    let slot = match (call.func_name.as_str(), call.args.as_mut_slice()) {
        // `all` / `exists`: `@result && body`, `@result || body`.
        (operators::LOGICAL_AND | operators::LOGICAL_OR, [first, body]) if is_accu(first) => body,
        // `filter`, `map` with a predicate, `exists_one`: `guard ? … : …`.
        (operators::CONDITIONAL, [guard, _, _]) => guard,
        // `map`: `@result + [item]`.
        (operators::ADD, [first, list]) if is_accu(first) => match &mut list.expr {
            Expr::List(items) if items.elements.len() == 1 => &mut items.elements[0],
            _ => list,
        },
        _ => {
            let step = std::mem::take(&mut c.loop_step);
            c.loop_step = guarded(step, cost);
            return;
        }
    };
    let body = std::mem::take(slot);
    *slot = guarded(body, cost);
}
