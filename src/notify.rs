//! The alert notifier: a JSON POST of each transition to `alerts.webhook_url`
//! (hyper's HTTP/1 client; https through rustls, trusting Mozilla's roots and
//! `alerts.webhook_ca_file`), retried with a doubling pause.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

/// Where transitions are posted.
#[derive(Clone)]
pub struct Webhook {
    host: String,
    port: u16,
    path: String,
    timeout: Duration,
    retries: u32,
    /// https: the client's TLS settings and the name the certificate must bear.
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Webhook({}://{}:{}{})",
            if self.tls.is_some() { "https" } else { "http" },
            self.host,
            self.port,
            self.path
        )
    }
}

/// A webhook URL that cannot be posted to.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WebhookUrlError {
    #[error("webhook URL {0:?} is not http:// or https://")]
    NotHttp(String),
    #[error("webhook URL {url:?}: {host:?} is not a name or address a certificate can bear")]
    ServerName { url: String, host: String },
    #[error("webhook CA file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("TLS settings: {0}")]
    Tls(String),
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
    /// `http[s]://host[:port][/path]` (checked at config load: an error names
    /// the URL). https trusts Mozilla's roots and the PEM certificates in
    /// `ca_file` (a private CA).
    pub fn parse(
        url: &str,
        timeout: Duration,
        retries: u32,
        ca_file: Option<&Path>,
    ) -> Result<Webhook, WebhookUrlError> {
        let (https, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(rest), _) => (false, rest),
            (_, Some(rest)) => (true, rest),
            _ => return Err(WebhookUrlError::NotHttp(url.into())),
        };
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
            None => (authority, if https { 443 } else { 80 }),
        };
        if host.is_empty() {
            return Err(WebhookUrlError::NoHost(url.into()));
        }
        let host = host.trim_matches(['[', ']']).to_string();
        let tls = if https {
            let name =
                ServerName::try_from(host.clone()).map_err(|_| WebhookUrlError::ServerName {
                    url: url.into(),
                    host: host.clone(),
                })?;
            Some((Arc::new(client_config(ca_file)?), name))
        } else {
            None
        };
        Ok(Webhook {
            host,
            port,
            path: path.to_string(),
            timeout,
            retries,
            tls,
        })
    }

    /// One POST: the response status.
    async fn post(&self, body: &[u8]) -> Result<u16, String> {
        let attempt = async {
            let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| format!("connect to {}:{}: {e}", self.host, self.port))?;
            match &self.tls {
                None => self.send(stream, body).await,
                Some((cfg, name)) => {
                    let tls = tokio_rustls::TlsConnector::from(cfg.clone())
                        .connect(name.clone(), stream)
                        .await
                        .map_err(|e| format!("TLS with {}: {e}", self.host))?;
                    self.send(tls, body).await
                }
            }
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {} ms", self.timeout.as_millis())),
        }
    }

    /// The request over a connected stream (plain or TLS).
    async fn send<S>(&self, stream: S, body: &[u8]) -> Result<u16, String>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        {
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

/// TLS settings trusting Mozilla's roots and the certificates of `ca_file`.
fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, WebhookUrlError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let bad = |reason: String| WebhookUrlError::CaFile {
            path: path.display().to_string(),
            reason,
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("holds no PEM certificate".into()));
        }
        for c in certs {
            roots.add(c).map_err(|e| bad(e.to_string()))?;
        }
    }
    // ring, not aws-lc-rs (whose build needs cmake and a C toolchain): its
    // key exchanges are the classical ones (X25519, P-256, P-384), which every
    // webhook receiver speaks; rustls marks it deprecated for lacking the
    // post-quantum hybrid.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| WebhookUrlError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
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
            None,
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
        let w = Webhook::parse("http://127.0.0.1:1/x", Duration::from_secs(2), 1, None).unwrap();
        let d = rt.block_on(w.deliver(b"{}".to_vec()));
        assert_eq!((d.attempts, d.status), (2, None));
        assert!(d.error.unwrap().contains("connect"));
    }

    #[test]
    fn webhook_urls_parse_or_say_why_not() {
        let p = |url: &str, ca: Option<&Path>| Webhook::parse(url, Duration::from_secs(1), 0, ca);
        let w = p("http://127.0.0.1:9093/hook/x", None).unwrap();
        assert_eq!(
            (w.host.as_str(), w.port, w.path.as_str()),
            ("127.0.0.1", 9093, "/hook/x")
        );
        assert!(w.tls.is_none());
        let w = p("http://alerts.local", None).unwrap();
        assert_eq!((w.port, w.path.as_str()), (80, "/"));
        let w = p("https://hooks.example.com/services/T0", None).unwrap();
        assert_eq!((w.port, w.tls.is_some()), (443, true));
        let e = p("ftp://x", None).unwrap_err();
        assert!(e.to_string().contains("http:// or https://"), "{e}");
        let e = p("http://h:port/", None).unwrap_err();
        assert!(e.to_string().contains("port"), "{e}");
        let e = p("https://x/", Some(Path::new("/no/such/ca.pem"))).unwrap_err();
        assert!(e.to_string().contains("/no/such/ca.pem"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = p("https://x/", Some(&empty)).unwrap_err();
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
    }

    /// A private CA and a certificate it signed for `localhost`: (CA PEM,
    /// the server's TLS settings).
    fn private_ca() -> (String, rustls::ServerConfig) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        (ca_cert.pem(), server)
    }

    #[test]
    fn an_https_receiver_signed_by_a_trusted_ca_gets_the_post_and_a_stranger_does_not() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (ca_pem, server) = private_ca();
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, ca_pem).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let got = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let g = got.clone();
        rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                // A client that does not trust the CA gives up in the handshake.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    continue;
                };
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !String::from_utf8_lossy(&req).ends_with("}") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                g.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&req).into_owned());
                let _ = tls
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
                let _ = tls.shutdown().await;
            }
        });
        let url = format!("https://localhost:{port}/hook");
        let trusted = Webhook::parse(&url, Duration::from_secs(5), 0, Some(&ca)).unwrap();
        let d = rt.block_on(trusted.deliver(b"{\"event\":\"firing\"}".to_vec()));
        assert_eq!((d.attempts, d.status, d.error), (1, Some(200), None));
        let req = got.lock().unwrap()[0].clone();
        assert!(
            req.starts_with("POST /hook HTTP/1.1") && req.ends_with("{\"event\":\"firing\"}"),
            "{req}"
        );
        // Mozilla's roots alone do not vouch for the private CA.
        let stranger = Webhook::parse(&url, Duration::from_secs(5), 0, None).unwrap();
        let d = rt.block_on(stranger.deliver(b"{}".to_vec()));
        assert_eq!(d.status, None);
        let e = d.error.unwrap();
        assert!(
            e.contains("TLS with localhost") && e.contains("certificate"),
            "{e}"
        );
        assert_eq!(got.lock().unwrap().len(), 1);
    }
}
