//! The control socket: a Unix socket created with mode 0600 (never reachable
//! by others, not even for an instant: it is bound in a private directory and
//! renamed into place), a stale one from a crashed run replaced, many clients
//! at once, size-limited request lines, removed on clean shutdown.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

use super::gate::Gate;

#[derive(Debug, Error)]
pub enum AdminError {
    #[error("another playpulse is serving the control socket {0} (stop it, or set admin.socket to another path)")]
    InUse(String),
    #[error("cannot create the control socket {path}: {source}")]
    Bind {
        path: String,
        source: std::io::Error,
    },
}

/// A bound control socket; dropping it removes the socket file (if still ours).
pub struct Socket {
    listener: Option<UnixListener>,
    path: PathBuf,
    inode: u64,
}

fn bind_err(path: &Path) -> impl Fn(std::io::Error) -> AdminError + '_ {
    move |source| AdminError::Bind {
        path: path.display().to_string(),
        source,
    }
}

impl Socket {
    /// Binds `path` (call inside a tokio runtime). A socket file nobody answers
    /// on is a leftover of a crashed run and is replaced; one that answers
    /// belongs to a running daemon.
    pub fn bind(path: &Path) -> Result<Socket, AdminError> {
        if std::fs::symlink_metadata(path).is_ok() {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => return Err(AdminError::InUse(path.display().to_string())),
                Err(_) => {
                    tracing::warn!(
                        "replacing the stale control socket {} (left by a run that did not stop cleanly)",
                        path.display()
                    );
                    std::fs::remove_file(path).map_err(bind_err(path))?;
                }
            }
        }
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(bind_err(path))?;
        // Bind inside a fresh 0700 directory, make it 0600, then move it into place.
        let private = tempfile::Builder::new()
            .prefix(".sock-")
            .tempdir_in(parent)
            .map_err(bind_err(path))?;
        std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700))
            .map_err(bind_err(path))?;
        let tmp = private.path().join("s");
        let listener = UnixListener::bind(&tmp).map_err(bind_err(path))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .map_err(bind_err(path))?;
        std::fs::rename(&tmp, path).map_err(bind_err(path))?;
        let inode = std::fs::metadata(path).map_err(bind_err(path))?.ino();
        tracing::info!("control socket at {} (mode 0600)", path.display());
        Ok(Socket {
            listener: Some(listener),
            path: path.to_path_buf(),
            inode,
        })
    }

    /// Whether the socket file is still this one (not removed or replaced).
    pub fn is_in_place(&self) -> bool {
        std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.inode)
    }

    /// The server: serves clients until the runtime stops (spawn it on the actix
    /// system); the socket file stays until this `Socket` is dropped.
    pub fn serve(
        &mut self,
        admin: Arc<Gate>,
        limits: Limits,
    ) -> impl std::future::Future<Output = ()> + 'static {
        serve(self.listener.take(), admin, limits)
    }
}

/// What one control client may take.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Clients connected at once.
    pub max_clients: usize,
    /// Longest request line, bytes.
    pub max_request: usize,
    /// A client that sends no complete request line within this is let go.
    pub idle: Duration,
}

/// How long a new client waits for the slot an evicted one frees.
const EVICT_WAIT: Duration = Duration::from_secs(2);

/// The clients waiting for their next request line, with when they began to
/// wait: when every slot is taken, the one waiting longest is let go so the
/// newcomer (an operator's `ctl status`) gets in. A client whose request is
/// being answered is never let go.
#[derive(Default)]
struct Waiting {
    next: u64,
    clients: std::collections::HashMap<u64, (std::time::Instant, Arc<tokio::sync::Notify>)>,
}

type Registry = Arc<std::sync::Mutex<Waiting>>;

fn lock(r: &Registry) -> std::sync::MutexGuard<'_, Waiting> {
    r.lock().unwrap_or_else(|p| p.into_inner())
}

/// Enters a client as waiting from now on; answers its entry's id.
fn enter(r: &Registry, evicted: &Arc<tokio::sync::Notify>) -> u64 {
    let mut reg = lock(r);
    reg.next += 1;
    let id = reg.next;
    reg.clients
        .insert(id, (std::time::Instant::now(), evicted.clone()));
    id
}

/// Lets the longest-waiting client go; answers whether there was one.
fn evict_oldest(r: &Registry) -> bool {
    let mut w = lock(r);
    let oldest = w
        .clients
        .iter()
        .min_by_key(|(_, (since, _))| *since)
        .map(|(id, _)| *id);
    match oldest.and_then(|id| w.clients.remove(&id)) {
        Some((_, n)) => {
            n.notify_one();
            true
        }
        None => false,
    }
}

async fn write_reply<W: tokio::io::AsyncWrite + Unpin>(w: &mut W, reply: &serde_json::Value) {
    let mut out = serde_json::to_vec(reply).unwrap_or_default();
    out.push(b'\n');
    let _ = tokio::time::timeout(EVICT_WAIT, w.write_all(&out)).await;
}

async fn serve(listener: Option<UnixListener>, admin: Arc<Gate>, limits: Limits) {
    let Some(listener) = listener else {
        return;
    };
    let slots = Arc::new(Semaphore::new(limits.max_clients));
    let waiting: Registry = Default::default();
    loop {
        let mut stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("control socket accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let got = if evict_oldest(&waiting) {
                    tokio::time::timeout(EVICT_WAIT, slots.clone().acquire_owned())
                        .await
                        .ok()
                        .and_then(Result::ok)
                } else {
                    None
                };
                match got {
                    Some(p) => p,
                    None => {
                        actix_rt::spawn(async move {
                            let reply = serde_json::json!({
                                "ok": false,
                                "error": format!("all {} control slots are answering requests (admin.max_clients); try again in a moment", limits.max_clients),
                            });
                            write_reply(&mut stream, &reply).await;
                        });
                        continue;
                    }
                }
            }
        };
        let (admin, waiting) = (admin.clone(), waiting.clone());
        // Waiting for its first request from the moment it is accepted.
        let evicted = Arc::new(tokio::sync::Notify::new());
        let first = enter(&waiting, &evicted);
        actix_rt::spawn(async move {
            if let Err(e) = connection(stream, &admin, limits, &waiting, (first, evicted)).await {
                tracing::debug!("control client left: {e}");
            }
            drop(permit);
        });
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        // Only our own socket: another daemon may have replaced a stale one since.
        if std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            if let Err(e) = std::fs::remove_file(&self.path) {
                tracing::warn!(
                    "cannot remove the control socket {}: {e}",
                    self.path.display()
                );
            }
        }
    }
}

enum Line {
    Request(Vec<u8>),
    TooLong(usize),
    Eof,
}

/// Reads one request line of at most `limit` bytes; a longer one is read to
/// its end and discarded, so the connection stays usable.
async fn read_line(
    r: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
    limit: usize,
) -> std::io::Result<Line> {
    let mut buf = Vec::new();
    let mut seen = 0usize;
    loop {
        let avail = r.fill_buf().await?;
        if avail.is_empty() {
            return Ok(if seen > limit {
                Line::TooLong(seen)
            } else if buf.is_empty() {
                Line::Eof
            } else {
                Line::Request(buf)
            });
        }
        let (chunk, done) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (&avail[..i], Some(i + 1)),
            None => (avail, None),
        };
        seen += chunk.len();
        if seen <= limit {
            buf.extend_from_slice(chunk);
        } else {
            buf = Vec::new();
        }
        let n = done.unwrap_or(avail.len());
        r.consume(n);
        if done.is_some() {
            return Ok(if seen > limit {
                Line::TooLong(seen)
            } else {
                Line::Request(buf)
            });
        }
    }
}

async fn connection(
    stream: UnixStream,
    admin: &Gate,
    limits: Limits,
    waiting: &Registry,
    (first, evicted): (u64, Arc<tokio::sync::Notify>),
) -> std::io::Result<()> {
    let limit = limits.max_request;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut entry = Some(first);
    loop {
        let id = match entry.take() {
            Some(id) => id,
            None => enter(waiting, &evicted),
        };
        let read = tokio::select! {
            r = tokio::time::timeout(limits.idle, read_line(&mut r, limit)) => Some(r),
            _ = evicted.notified() => None,
        };
        lock(waiting).clients.remove(&id);
        let line = match read {
            None => {
                let reply = serde_json::json!({
                    "ok": false,
                    "error": "disconnected: every control slot was taken and this client had waited longest (admin.max_clients)",
                });
                write_reply(&mut w, &reply).await;
                return Ok(());
            }
            Some(Err(_)) => {
                let reply = serde_json::json!({
                    "ok": false,
                    "error": format!("no complete request within {} s (admin.client_timeout_seconds): disconnected", limits.idle.as_secs()),
                });
                write_reply(&mut w, &reply).await;
                return Ok(());
            }
            Some(Ok(line)) => line?,
        };
        let reply = match line {
            Line::Eof => return Ok(()),
            Line::TooLong(n) => serde_json::json!({
                "ok": false,
                "error": format!("request of {n} bytes is over the limit of {limit} (admin.max_request_bytes); send shorter requests"),
            }),
            Line::Request(line) if line.iter().all(u8::is_ascii_whitespace) => continue,
            Line::Request(line) => admin.handle(&line).await,
        };
        let mut out = serde_json::to_vec(&reply)
            .unwrap_or_else(|_| br#"{"ok":false,"error":"reply could not be encoded"}"#.to_vec());
        out.push(b'\n');
        // A client that does not read its replies is let go as well.
        tokio::time::timeout(limits.idle, w.write_all(&out))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "reply not read"))??;
    }
}
