//! HTTP on loopback by default (`http.listen`): the dashboard page (live charts
//! of ingest, QoE, engagement, models; a recommendations viewer), the read-only
//! JSON API behind it, and Prometheus `/metrics`. The page is self-contained:
//! its chart library (uPlot, MIT, `assets/LICENSE.uplot`) is served from here.

pub mod metrics;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::Value;

use crate::admin::protocol::{ModelsAction, Request};
use crate::admin::{Admin, Gate};

const PAGE: &str = include_str!("dashboard.html");
const UPLOT_JS: &str = include_str!("assets/uplot.iife.min.js");
const UPLOT_CSS: &str = include_str!("assets/uplot.min.css");

type Params = Query<HashMap<String, String>>;

/// Whether a `Host` header names this server: an IP address, `localhost`,
/// or one of `allowed` (case-insensitive), with any port.
pub fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        match rest.split_once(']') {
            Some((ip, tail)) if tail.is_empty() || tail.starts_with(':') => {
                return ip.parse::<std::net::Ipv6Addr>().is_ok();
            }
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((n, port)) if port.parse::<u16>().is_ok() => n,
            Some(_) => return false,
            None => host,
        }
    };
    name.parse::<std::net::Ipv4Addr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
}

async fn check_host(
    State(gate): State<Arc<Gate>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if host_allowed(host, &gate.cfg.http.allowed_hosts) {
        return next.run(req).await;
    }
    let shown: String = host.chars().take(200).collect();
    (
        StatusCode::FORBIDDEN,
        axum::Json(serde_json::json!({
            "ok": false,
            "error": format!("Host {shown:?} is not this server's: use its address or localhost, or add the name to http.allowed_hosts"),
        })),
    )
        .into_response()
}

/// A handler's way to the running daemon: a request that comes while it
/// starts waits for the start a moment, then gets 503 with what it waits for.
pub struct Ready(pub Arc<Admin>);

impl axum::extract::FromRequestParts<Arc<Gate>> for Ready {
    type Rejection = Response;

    async fn from_request_parts(
        _: &mut axum::http::request::Parts,
        gate: &Arc<Gate>,
    ) -> Result<Ready, Response> {
        match gate.admin_soon().await {
            Some(a) => Ok(Ready(a.clone())),
            None => Err((
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(
                    serde_json::json!({ "ok": false, "error": gate.starting_error(),
                    "starting": gate.starting_status() }),
                ),
            )
                .into_response()),
        }
    }
}

/// The router over the daemon's gate (see [`Gate`]).
pub fn router(admin: Arc<Gate>) -> Router {
    Router::new()
        .route("/", get(page))
        .route(
            "/assets/uplot.js",
            get(|| asset(UPLOT_JS, "text/javascript")),
        )
        .route("/assets/uplot.css", get(|| asset(UPLOT_CSS, "text/css")))
        .route("/api/status", get(status))
        .route("/api/stats", get(stats))
        .route("/api/analytics", get(analytics))
        .route("/api/models", get(models))
        .route("/api/recommend", get(recommend))
        .route("/api/similar", get(similar))
        .route("/api/graph", get(graph))
        .route("/metrics", get(metrics::render))
        .layer(axum::middleware::from_fn_with_state(
            admin.clone(),
            check_host,
        ))
        .with_state(admin)
}

async fn page() -> Response {
    asset(PAGE, "text/html; charset=utf-8").await
}

async fn asset(body: &'static str, kind: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

/// An admin reply as HTTP: 200 with the reply, or 400/404/503 with `{ok:false,error}`.
fn reply(v: Value) -> Response {
    let code = if v["ok"] == true {
        StatusCode::OK
    } else {
        let e = v["error"].as_str().unwrap_or("");
        if e.contains("no model has been trained yet") {
            StatusCode::SERVICE_UNAVAILABLE
        } else if e.contains("is not in model") || e.contains("no model version") {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::BAD_REQUEST
        }
    };
    (code, axum::Json(v)).into_response()
}

fn bad(message: String) -> Response {
    reply(serde_json::json!({ "ok": false, "error": message }))
}

fn number<T: std::str::FromStr>(
    p: &HashMap<String, String>,
    key: &str,
) -> Result<Option<T>, String> {
    match p.get(key) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| format!("query parameter {key}={v:?} is not a number")),
    }
}

async fn status(Ready(a): Ready) -> Response {
    reply(a.call(Request::Status {}).await)
}

async fn stats(Ready(a): Ready, Query(p): Params) -> Response {
    reply(
        a.call(Request::Stats {
            section: p.get("section").cloned(),
        })
        .await,
    )
}

async fn analytics(Ready(a): Ready, Query(p): Params) -> Response {
    let (minutes, limit) = match (number(&p, "minutes"), number(&p, "limit")) {
        (Ok(m), Ok(l)) => (m, l),
        (Err(e), _) | (_, Err(e)) => return bad(e),
    };
    let Some(view) = p.get("view").cloned() else {
        return bad(
            "query parameter `view` is missing: qoe, series, top, engagement or pipeline".into(),
        );
    };
    reply(
        a.call(Request::Analytics {
            view,
            dim: p.get("dim").cloned(),
            key: p.get("key").cloned(),
            minutes,
            limit,
        })
        .await,
    )
}

async fn models(Ready(a): Ready) -> Response {
    reply(
        a.call(Request::Models {
            action: ModelsAction::List,
            id: None,
        })
        .await,
    )
}

async fn recommend(Ready(a): Ready, Query(p): Params) -> Response {
    let k = match number(&p, "k") {
        Ok(k) => k,
        Err(e) => return bad(e),
    };
    let Some(user) = p.get("user").cloned() else {
        return bad("query parameter `user` is missing".into());
    };
    reply(
        a.call(Request::Recommend {
            user,
            k,
            region: p.get("region").cloned().filter(|s| !s.is_empty()),
            genre: p.get("genre").cloned().filter(|s| !s.is_empty()),
        })
        .await,
    )
}

async fn graph(Ready(a): Ready, Query(p): Params) -> Response {
    let (offset, limit) = match (number(&p, "offset"), number(&p, "limit")) {
        (Ok(o), Ok(l)) => (o, l),
        (Err(e), _) | (_, Err(e)) => return bad(e),
    };
    let Some(query) = p.get("query").cloned() else {
        return bad("query parameter `query` is missing: user_tracks, artist_tracks, genre_tracks, top, also_liked, artist_neighbours or genre_neighbours".into());
    };
    let arg = |k: &str| p.get(k).cloned().filter(|s| !s.is_empty());
    reply(
        a.call(Request::Graph(crate::graph::GraphRequest {
            query,
            user: arg("user"),
            action: arg("action"),
            artist: arg("artist"),
            genre: arg("genre"),
            offset,
            limit,
        }))
        .await,
    )
}

async fn similar(Ready(a): Ready, Query(p): Params) -> Response {
    let k = match number(&p, "k") {
        Ok(k) => k,
        Err(e) => return bad(e),
    };
    let Some(item) = p.get("item").cloned() else {
        return bad("query parameter `item` is missing".into());
    };
    reply(a.call(Request::Similar { item, k }).await)
}

#[cfg(test)]
mod tests {
    use super::host_allowed;

    #[test]
    fn hosts_are_addresses_localhost_or_allowed_names() {
        let allowed = vec!["dash.example.com".to_string()];
        for ok in [
            "127.0.0.1:8787",
            "127.0.0.1",
            "localhost:8787",
            "LOCALHOST",
            "[::1]:8787",
            "[::1]",
            "10.1.2.3:80",
            "dash.example.com:8787",
            "Dash.Example.com",
        ] {
            assert!(host_allowed(ok, &allowed), "{ok}");
        }
        for bad in [
            "",
            "evil.example:8787",
            "attacker.test",
            "localhost.evil.test:8787",
            "127.0.0.1.nip.io:8787",
            "[::1",
            "localhost:notaport",
            "[zz]:1",
        ] {
            assert!(!host_allowed(bad, &allowed), "{bad}");
        }
    }
}
