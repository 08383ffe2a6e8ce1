//! The control socket: a Unix socket created with mode 0600 (never reachable
//! by others, not even for an instant: it is bound in a private directory and
//! renamed into place), a stale one from a crashed run replaced, many clients
//! at once, size-limited request lines, removed on clean shutdown.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

use super::commands::Admin;

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

    /// The server: serves clients until the runtime stops (spawn it on the actix
    /// system); the socket file stays until this `Socket` is dropped.
    pub fn serve(
        &mut self,
        admin: Arc<Admin>,
        max_clients: usize,
        max_request: usize,
    ) -> impl std::future::Future<Output = ()> + 'static {
        serve(self.listener.take(), admin, max_clients, max_request)
    }
}

async fn serve(
    listener: Option<UnixListener>,
    admin: Arc<Admin>,
    max_clients: usize,
    max_request: usize,
) {
    {
        let Some(listener) = listener else {
            return;
        };
        let slots = Arc::new(Semaphore::new(max_clients));
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!("control socket accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let admin = admin.clone();
            actix_rt::spawn(async move {
                if let Err(e) = connection(stream, &admin, max_request).await {
                    tracing::debug!("control client left: {e}");
                }
                drop(permit);
            });
        }
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

async fn connection(stream: UnixStream, admin: &Admin, limit: usize) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    loop {
        let reply = match read_line(&mut r, limit).await? {
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
        w.write_all(&out).await?;
    }
}
