//! The alert notifier: a JSON POST of each transition to `alerts.webhook_url`
//! (hyper's HTTP/1 client), retried with a doubling pause.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;

/// Where transitions are posted.
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    host: String,
    port: u16,
    path: String,
    timeout: Duration,
    retries: u32,
}

/// A webhook URL that cannot be posted to.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WebhookUrlError {
    #[error("webhook URL {0:?} is not http://")]
    NotHttp(String),
    #[error("webhook URL {url:?}: port {port:?} is not a number")]
    Port { url: String, port: String },
    #[error("webhook URL {0:?} names no host")]
    NoHost(String),
}

/// What delivering one notification came to.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub attempts: u32,
    pub status: Option<u16>,
    pub error: Option<String>,
}

impl Webhook {
    /// `http://host[:port][/path]` (checked at config load: an error names the URL).
    pub fn parse(url: &str, timeout: Duration, retries: u32) -> Result<Webhook, WebhookUrlError> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| WebhookUrlError::NotHttp(url.into()))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>().map_err(|_| WebhookUrlError::Port {
                    url: url.into(),
                    port: p.into(),
                })?,
            ),
            None => (authority, 80),
        };
        if host.is_empty() {
            return Err(WebhookUrlError::NoHost(url.into()));
        }
        Ok(Webhook {
            host: host.trim_matches(['[', ']']).to_string(),
            port,
            path: path.to_string(),
            timeout,
            retries,
        })
    }

    /// One POST: the response status.
    async fn post(&self, body: &[u8]) -> Result<u16, String> {
        let attempt = async {
            let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| format!("connect to {}:{}: {e}", self.host, self.port))?;
            let io = hyper_util::rt::TokioIo::new(stream);
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| e.to_string())?;
            let req = hyper::Request::post(self.path.as_str())
                .header(hyper::header::HOST, format!("{}:{}", self.host, self.port))
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .header(hyper::header::CONNECTION, "close")
                .header(hyper::header::USER_AGENT, "playpulse")
                .body(Full::new(Bytes::copy_from_slice(body)))
                .map_err(|e| e.to_string())?;
            // The connection runs beside the request (it ends when the
            // receiver closes it; the timeout below bounds the whole attempt).
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            // Read the (bounded) body so the connection ends cleanly.
            let _ =
                tokio::time::timeout(Duration::from_millis(200), resp.into_body().collect()).await;
            Ok(status)
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {} ms", self.timeout.as_millis())),
        }
    }

    /// POSTs `body` until a 2xx answer, at most 1 + `retries` times.
    pub async fn deliver(&self, body: Vec<u8>) -> Delivery {
        let mut pause = Duration::from_millis(500);
        let mut last = Delivery {
            attempts: 0,
            status: None,
            error: None,
        };
        for attempt in 0..=self.retries {
            if attempt > 0 {
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            last.attempts = attempt + 1;
            match self.post(&body).await {
                Ok(s) if (200..300).contains(&s) => {
                    last.status = Some(s);
                    last.error = None;
                    return last;
                }
                Ok(s) => {
                    last.status = Some(s);
                    last.error = Some(format!("answered {s}"));
                }
                Err(e) => last.error = Some(e),
            }
        }
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A receiver answering `statuses` in turn; answers the bodies it got.
    fn receiver(statuses: Vec<u16>) -> (u16, std::thread::JoinHandle<Vec<String>>) {
        use std::io::{BufRead, BufReader, Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let h = std::thread::spawn(move || {
            let mut got = Vec::new();
            for status in statuses {
                let (mut c, _) = l.accept().unwrap();
                let mut r = BufReader::new(c.try_clone().unwrap());
                let (mut line, mut len) = (String::new(), 0usize);
                while r.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    line.clear();
                }
                let mut body = vec![0; len];
                r.read_exact(&mut body).unwrap();
                got.push(String::from_utf8(body).unwrap());
                write!(
                    c,
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                )
                .unwrap();
            }
            got
        });
        (port, h)
    }

    #[test]
    fn a_refused_notification_is_retried_until_taken() {
        let (port, h) = receiver(vec![503, 200]);
        let w = Webhook::parse(
            &format!("http://127.0.0.1:{port}/x"),
            Duration::from_secs(5),
            2,
        )
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let d = rt.block_on(w.deliver(b"{\"a\":1}".to_vec()));
        assert_eq!(
            d,
            Delivery {
                attempts: 2,
                status: Some(200),
                error: None
            }
        );
        assert_eq!(h.join().unwrap(), vec!["{\"a\":1}", "{\"a\":1}"]);
        // Nobody listening: every attempt fails, the error says why.
        let w = Webhook::parse("http://127.0.0.1:1/x", Duration::from_secs(2), 1).unwrap();
        let d = rt.block_on(w.deliver(b"{}".to_vec()));
        assert_eq!((d.attempts, d.status), (2, None));
        assert!(d.error.unwrap().contains("connect"));
    }

    #[test]
    fn webhook_urls_parse_or_say_why_not() {
        let w = Webhook::parse("http://127.0.0.1:9093/hook/x", Duration::from_secs(1), 2).unwrap();
        assert_eq!(
            (w.host.as_str(), w.port, w.path.as_str()),
            ("127.0.0.1", 9093, "/hook/x")
        );
        let w = Webhook::parse("http://alerts.local", Duration::from_secs(1), 0).unwrap();
        assert_eq!((w.port, w.path.as_str()), (80, "/"));
        let e = Webhook::parse("https://x", Duration::from_secs(1), 0).unwrap_err();
        assert!(e.to_string().contains("http://"), "{e}");
        let e = Webhook::parse("http://h:port/", Duration::from_secs(1), 0).unwrap_err();
        assert!(e.to_string().contains("port"), "{e}");
    }
}
