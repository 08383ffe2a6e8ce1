//! HTTP on loopback by default (`http.listen`): the dashboard page (live charts
//! of ingest, QoE, engagement, models; a recommendations viewer), the read-only
//! JSON API behind it, and Prometheus `/metrics`. The page is self-contained:
//! its chart library (uPlot, MIT, `assets/LICENSE.uplot`) is served from here.

pub mod metrics;
pub mod params;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::admin::cmd::models::{Models, ModelsAction};
use crate::admin::cmd::Reply;
use crate::admin::protocol::{error_wire, to_wire, NoArgs, Request};
use crate::admin::{Admin, CommandError, Gate, RequestError};

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
        axum::Json(error_wire(&format!("Host {shown:?} is not this server's: use its address or localhost, or add the name to http.allowed_hosts"))),
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
            None => {
                let mut body = error_wire(&gate.starting_error().to_string());
                if let Some(m) = body.as_object_mut() {
                    m.insert(
                        "starting".into(),
                        serde_json::to_value(gate.starting_status()).unwrap_or_default(),
                    );
                }
                Err((StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response())
            }
        }
    }
}

/// The HTTP server running on a runtime of its own (see [`spawn`]); dropping
/// it stops the server.
pub struct Server {
    runtime: Option<tokio::runtime::Runtime>,
    addr: std::net::SocketAddr,
}

impl Server {
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            // (a runtime may not be dropped from async code: let it go)
            rt.shutdown_background();
        }
    }
}

/// Serves the router on `listener` from a runtime of `threads` worker
/// threads of its own (named `http`), not from the daemon's system thread:
/// a request waits neither for that thread's other work (the control
/// socket, timers) nor for another request, and it is answered in 2
/// thread wake-ups (connection, worker) where the system thread took 4.
/// The workers ask for a short scheduler slice (see
/// [`crate::domain::worker::request_priority`]).
pub fn spawn(
    listener: std::net::TcpListener,
    admin: Arc<Gate>,
    threads: usize,
) -> std::io::Result<Server> {
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name("http")
        .on_thread_start(|| {
            crate::domain::worker::request_priority();
        })
        .enable_all()
        .build()?;
    let listener = {
        let _in = rt.enter();
        tokio::net::TcpListener::from_std(listener)?
    };
    rt.spawn(async move {
        if let Err(e) = serve(listener, admin).await {
            tracing::error!("http server stopped: {e}");
        }
    });
    Ok(Server {
        runtime: Some(rt),
        addr,
    })
}

/// Serves the router on `listener` until it fails. Every connection has
/// TCP_NODELAY: a keep-alive client's next request otherwise waits for the
/// delayed acknowledgement of the last reply (up to 40 ms).
async fn serve(listener: tokio::net::TcpListener, admin: Arc<Gate>) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY on a connection: {e}");
        }
    });
    axum::serve(listener, router(admin)).await
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
        .route("/api/alerts", get(alerts))
        .route("/api/models", get(models))
        .route("/api/recommend", get(recommend))
        .route("/api/similar", get(similar))
        .route("/api/trending", get(trending))
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

/// A command's outcome as HTTP: 200 with the reply, or the error's status
/// with `{ok: false, error}`.
fn reply(outcome: Result<Reply, CommandError>) -> Response {
    let code = match &outcome {
        Ok(_) => StatusCode::OK,
        Err(e) => StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST),
    };
    (code, axum::Json(to_wire(&outcome))).into_response()
}

/// Runs the request the query parameters make, built by `make` from the
/// command's argument type.
async fn call<T: serde::de::DeserializeOwned>(
    a: &Admin,
    p: &HashMap<String, String>,
    make: impl FnOnce(T) -> Request,
) -> Response {
    match params::from_params::<T>(p) {
        Ok(args) => reply(a.call(make(args)).await),
        Err(e) => reply(Err(e.into())),
    }
}

async fn status(Ready(a): Ready) -> Response {
    reply(a.call(Request::Status(NoArgs {})).await)
}

async fn stats(Ready(a): Ready, Query(p): Params) -> Response {
    call(&a, &p, Request::Stats).await
}

async fn analytics(Ready(a): Ready, Query(p): Params) -> Response {
    if !p.contains_key("view") {
        return reply(Err(RequestError::ParamMissing { key: "view".into() }.into()));
    }
    call(&a, &p, Request::Analytics).await
}

async fn alerts(Ready(a): Ready) -> Response {
    reply(a.call(Request::Alerts(NoArgs {})).await)
}

async fn models(Ready(a): Ready) -> Response {
    reply(
        a.call(Request::Models(Models {
            action: ModelsAction::List,
            id: None,
            dir: None,
        }))
        .await,
    )
}

async fn recommend(Ready(a): Ready, Query(p): Params) -> Response {
    call(&a, &p, Request::Recommend).await
}

async fn graph(Ready(a): Ready, Query(p): Params) -> Response {
    call(&a, &p, Request::Graph).await
}

async fn similar(Ready(a): Ready, Query(p): Params) -> Response {
    call(&a, &p, Request::Similar).await
}

async fn trending(Ready(a): Ready, Query(p): Params) -> Response {
    call(&a, &p, Request::Trending).await
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
