//! `graph`: the listening graph's queries (the request type is the graph's own).

use crate::admin::bounds::{id, in_range, opt, MAX_OFFSET};
use crate::admin::context::{blocking, Admin};
use crate::admin::error::{CommandError, RequestError};
use crate::views::graph::GraphAnswer;
pub use crate::views::graph::GraphRequest as Graph;

impl Graph {
    pub fn check(&self) -> Result<(), RequestError> {
        id("query", &self.query)?;
        for (name, v) in [
            ("user", &self.user),
            ("action", &self.action),
            ("artist", &self.artist),
            ("genre", &self.genre),
        ] {
            opt(name, v)?;
        }
        in_range("offset", self.offset, 0, MAX_OFFSET)?;
        in_range("limit", self.limit, 1, crate::views::graph::MAX_LIMIT)
    }
}

/// Graph entries a query may visit to be answered where it is asked, as
/// `recommend` is: a hand-over to the blocking pool costs two thread
/// wake-ups, which on a loaded machine take up to milliseconds. A larger
/// one goes to the pool, so an HTTP worker is never held long. Measured
/// with `bench graph` (1M listens): every also_liked query is within it
/// (p99 45 us); a neighbour row entry takes about 10 ns, so a row at the
/// budget would take about 0.3 ms.
pub const INLINE_WORK: usize = 30_000;

pub async fn graph(a: &Admin, req: Graph) -> Result<GraphAnswer, CommandError> {
    let here = a.indexes.with_graph(|g| {
        crate::views::graph::within(g, &req, INLINE_WORK)
            .then(|| crate::views::graph::answer(g, &req))
    })?;
    if let Some(answer) = here {
        return Ok(answer?);
    }
    let indexes = a.indexes.clone();
    let answer = blocking(move || {
        let answer = indexes.with_graph(|g| crate::views::graph::answer(g, &req))?;
        Ok::<_, CommandError>(answer?)
    })
    .await??;
    Ok(answer)
}
