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

pub async fn graph(a: &Admin, req: Graph) -> Result<GraphAnswer, CommandError> {
    let indexes = a.indexes.clone();
    let answer = blocking(move || {
        let answer = indexes.with_graph(|g| crate::views::graph::answer(g, &req))?;
        Ok::<_, CommandError>(answer?)
    })
    .await??;
    Ok(answer)
}
