//! Bounds on what one statement may ask the planner to do, checked on the
//! parsed statement before DataFusion sees it.
//!
//! DataFusion's planning is far from linear in some dimensions, measured on
//! a debug build (2 cores):
//! - a select list costs about its length times its expressions (every
//!   expression is printed and compared with every other one): 1664
//!   entries of 20 terms each took 2 s, `select 0, 1, …, 65534` 250 s;
//! - a nested expression costs about its depth squared (each level prints
//!   the levels below it): `1 + 1 + …` of 999 terms took 1.2 s, 35 such
//!   sums of 900 terms 33 s;
//! - a flat list is cheap: an `IN` list of 70000 literals plans in 0.5 s.
//!
//! Each cost is bounded by a measure taken in one walk of the statement,
//! which costs next to nothing:
//! - a target list longer than PostgreSQL's 1664 entries fails exactly as
//!   in PostgreSQL (54011, `target lists can have at most 1664 entries`);
//! - everything else fails with 54000 (`program_limit_exceeded`) and a
//!   message `statement too complex: …` naming the measure and its limit:
//!   more than [`MAX_EXPRESSIONS`] expression nodes, a select list whose
//!   entries times expressions pass [`MAX_SELECT_LIST_COST`], nesting that
//!   passes [`MAX_NESTING`], or all three together more than one alone
//!   (as shares of their limits: the costs add up).
//!
//! Under these limits a statement plans in about a second at most (debug
//! build). They are far above what BI tools and drivers send (the captured
//! queries under `/work/shared/bi-queries/` have at most a few dozen
//! operators) and leave room for PostgreSQL's 65535 parameters, even cast
//! (`$n::bigint` is two expressions).

use std::ops::ControlFlow;

use millrace_engine::error::{ErrorKind, SqlError, SqlResult};
use millrace_planner::statement::Statement;
use sqlparser::ast::{Expr, Select, Statement as Sql, Visit, Visitor};

/// PostgreSQL's `MaxTupleAttributeNumber`: the longest target list.
pub(crate) const MAX_TARGET_LIST: usize = 1664;

/// The most expression nodes (every column reference, literal, operator,
/// function call and `$n`) one statement may hold: room for PostgreSQL's
/// 65535 parameters, each with a cast, and the statement around them.
pub(crate) const MAX_EXPRESSIONS: usize = 150_000;

/// The most one select list may cost: its entries but one times the
/// expressions in them, as each entry is compared with the others (1664
/// plain entries cost 2.8 million; 1664 entries of 20 terms, which took
/// 2 s, 65 million).
pub(crate) const MAX_SELECT_LIST_COST: usize = 20_000_000;

/// The most nesting a statement may hold: the sum, over its expressions,
/// of how deep each is nested below the second level (an expression at
/// the top and its operands count 0, theirs 1, …: a list of `$n::bigint`
/// costs nothing here). `a OR b OR …` of n terms nests n deep and weighs
/// about n²: up to about 990 terms are allowed. As nesting d deep weighs
/// at least (d-2)²/2, this also bounds the depth (to 1416), which keeps
/// every pass over the statement that recurses (cloning, dropping,
/// planning) within its stack: a 400-term `1 + 1 + …` once overflowed a
/// 2 MiB stack and took the server down.
pub(crate) const MAX_NESTING: usize = 1_000_000;

/// Refuses `stmt` if planning it would cost more than the limits allow.
pub(crate) fn check(stmt: &Statement) -> SqlResult<()> {
    let sql = match stmt {
        Statement::Sql(sql)
        | Statement::CreateTable { table: sql, .. }
        | Statement::CreateViewOnWindowClose(sql)
        | Statement::ExplainViewOnWindowClose(sql) => sql,
        Statement::Flush { .. }
        | Statement::ShowRelations(_)
        | Statement::CreateSource(_)
        | Statement::DropSource(_) => return Ok(()),
    };
    check_sql(sql)
}

fn check_sql(sql: &Sql) -> SqlResult<()> {
    let mut counter = Counter::default();
    if let ControlFlow::Break(e) = sql.visit(&mut counter) {
        return Err(e);
    }
    if let Sql::Insert(insert) = sql {
        if let Some(returning) = &insert.returning {
            target_list(returning.len())?;
        }
    }
    let n = counter.expressions;
    if n > MAX_EXPRESSIONS {
        return Err(too_complex(format!(
            "{n} expressions, the limit is {MAX_EXPRESSIONS}"
        )));
    }
    // The costs add up: each limit alone is about a second of planning, so
    // together they may take no more than one of them alone.
    let (w, c) = (counter.nesting, counter.select_lists);
    let share = |x: usize, limit: usize| x as f64 / limit as f64;
    if share(n, MAX_EXPRESSIONS) + share(w, MAX_NESTING) + share(c, MAX_SELECT_LIST_COST) > 1.0 {
        return Err(too_complex(format!(
            "{n} expressions, nesting {w} and select lists costing {c} are more than the limit together \
             (it allows {MAX_EXPRESSIONS} expressions, nesting {MAX_NESTING} or select lists costing {MAX_SELECT_LIST_COST} alone)"
        )));
    }
    Ok(())
}

fn too_complex(what: String) -> SqlError {
    SqlError::new(
        ErrorKind::ProgramLimitExceeded,
        format!("statement too complex: {what}"),
    )
    .with_hint(
        "Split the statement into smaller ones; write a long chain of OR as IN (…), or pass a long list as one array parameter.",
    )
}

/// Measures the statement in one walk, which stops at the first select
/// list refused or once the nesting passes its limit (so that a statement
/// nested deeper than any stack allows is never walked to its bottom).
#[derive(Default)]
struct Counter {
    expressions: usize,
    /// How deep the walk is in nested expressions.
    depth: usize,
    /// The sum of the depths of the expressions walked.
    nesting: usize,
    /// The cost of the select lists walked (see [`MAX_SELECT_LIST_COST`]).
    select_lists: usize,
}

impl Visitor for Counter {
    type Break = SqlError;

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<SqlError> {
        let entries = select.projection.len();
        if let Err(e) = target_list(entries) {
            return ControlFlow::Break(e);
        }
        let mut inner = Counter::default();
        if let ControlFlow::Break(e) = select.projection.visit(&mut inner) {
            return ControlFlow::Break(e);
        }
        let expressions = inner.expressions;
        let cost = entries.saturating_sub(1).saturating_mul(expressions);
        if cost > MAX_SELECT_LIST_COST {
            return ControlFlow::Break(too_complex(format!(
                "a select list of {entries} entries and {expressions} expressions costs {cost}, the limit is {MAX_SELECT_LIST_COST} (entries times expressions)"
            )));
        }
        self.select_lists = self.select_lists.saturating_add(cost);
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<SqlError> {
        self.expressions += 1;
        self.depth += 1;
        self.nesting += self.depth.saturating_sub(2);
        if self.nesting > MAX_NESTING {
            return ControlFlow::Break(too_complex(format!(
                "expressions nested too deep (their depths add up to more than {MAX_NESTING}), the limit is {MAX_NESTING}"
            )));
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<SqlError> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }
}

/// PostgreSQL's check of a target list's length (in `transformTargetList`
/// and its kin): 54011 past [`MAX_TARGET_LIST`] entries.
fn target_list(entries: usize) -> SqlResult<()> {
    if entries > MAX_TARGET_LIST {
        return Err(SqlError::new(
            ErrorKind::TooManyColumns,
            format!("target lists can have at most {MAX_TARGET_LIST} entries"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(sql: &str) -> SqlResult<()> {
        let stmts = millrace_planner::statement::parse(sql).expect("parses");
        stmts.iter().try_for_each(check)
    }

    fn list(n: usize) -> String {
        (0..n).map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
    }

    fn sum(n: usize) -> String {
        format!("SELECT {}", vec!["1"; n].join(" + "))
    }

    #[test]
    fn target_lists_stop_at_1664_entries_in_every_select() {
        assert!(checked(&format!("SELECT {}", list(1664))).is_ok());
        for sql in [
            format!("SELECT {}", list(1665)),
            format!("SELECT * FROM (SELECT {}) s", list(1665)),
            format!("SELECT 1 UNION ALL SELECT {}", list(1665)),
        ] {
            let e = checked(&sql).expect_err("refused");
            assert_eq!(e.kind, ErrorKind::TooManyColumns);
            assert_eq!(e.message, "target lists can have at most 1664 entries");
        }
    }

    #[test]
    fn expressions_are_counted_exactly() {
        // The projection's `1`, the IN, its `1`, and the items.
        let in_list = |n| format!("SELECT 1 WHERE 1 IN ({})", list(n));
        assert!(checked(&in_list(MAX_EXPRESSIONS - 3)).is_ok());
        let e = checked(&in_list(MAX_EXPRESSIONS - 2)).expect_err("refused");
        assert_eq!(e.kind, ErrorKind::ProgramLimitExceeded);
        assert_eq!(
            e.message,
            "statement too complex: 150001 expressions, the limit is 150000"
        );
    }

    #[test]
    fn nesting_allows_a_sum_of_990_terms_not_1100() {
        // On a stack as large as a statement thread's: parsing builds, and
        // dropping walks, the whole depth of the deepest sum.
        std::thread::Builder::new()
            .stack_size(crate::pg::STATEMENT_STACK)
            .spawn(|| {
                assert!(checked(&sum(990)).is_ok());
                for n in [1100, 100_000] {
                    let e = checked(&sum(n)).expect_err("refused");
                    assert_eq!(e.kind, ErrorKind::ProgramLimitExceeded);
                    assert!(e
                        .message
                        .starts_with("statement too complex: expressions nested too deep"));
                }
            })
            .expect("thread")
            .join()
            .expect("checked");
    }

    #[test]
    fn costs_under_each_limit_alone_add_up() {
        // 100000 items (2/3 of the expressions) and a sum of 700 terms
        // (half the nesting): each allowed alone, not together.
        let items = list(100_000);
        let sum = vec!["1"; 700].join(" + ");
        assert!(checked(&format!("SELECT 1 WHERE 1 IN ({items})")).is_ok());
        assert!(checked(&format!("SELECT 1 WHERE ({sum}) > 0")).is_ok());
        let e = checked(&format!("SELECT 1 WHERE ({sum}) > 0 AND 1 IN ({items})"))
            .expect_err("refused");
        assert_eq!(e.kind, ErrorKind::ProgramLimitExceeded);
        assert!(
            e.message.contains("more than the limit together"),
            "{}",
            e.message
        );
    }

    #[test]
    fn a_wide_select_list_of_big_expressions_is_refused() {
        let entry = vec!["1"; 20].join(" + ");
        let wide = vec![entry.as_str(); 1600].join(", ");
        let e = checked(&format!("SELECT {wide}")).expect_err("refused");
        assert_eq!(e.kind, ErrorKind::ProgramLimitExceeded);
        assert!(
            e.message.contains("a select list of 1600 entries"),
            "{}",
            e.message
        );
    }
}
