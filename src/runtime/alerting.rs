//! The alert loop: every `alerts.interval_seconds` the rules are evaluated
//! over the rollups (off the runtime's thread) and each transition is posted
//! to the webhook (in its own task: a slow receiver never delays the next
//! evaluation). In a group every member evaluates the group's rollups (its
//! `status` and `/api/alerts` show the states), and the member that trains
//! posts: one notification per transition for the group.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::store::StoreView;
use crate::views::alerts::{AlertsConfig, Book};

/// The shared book of alert states (status, `/api/alerts`, `/metrics` read it).
pub type SharedBook = Arc<Mutex<Book>>;

/// Starts the loop on the current actix system; answers the book.
pub fn start(
    view: StoreView,
    cfg: &AlertsConfig,
    cluster: Option<crate::cluster::Cluster>,
) -> SharedBook {
    let book: SharedBook = Arc::new(Mutex::new(Book::new(cfg.rules.clone())));
    if cfg.rules.is_empty() {
        return book;
    }
    let webhook = (!cfg.webhook_url.is_empty())
        .then(|| cfg.webhook())
        .and_then(|w| {
            w.map_err(|e| tracing::error!("alerts: {e}; no notifications"))
                .ok()
        })
        .map(Arc::new);
    let every = Duration::from_secs(u64::from(cfg.interval_seconds));
    let b = book.clone();
    actix_rt::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (b2, v) = (b.clone(), view.clone());
            let transitions = tokio::task::spawn_blocking(move || {
                let newest = v.rollup_status().group_newest();
                let now = crate::domain::timefmt::now_ms();
                let mut book = b2.lock().unwrap_or_else(|p| p.into_inner());
                book.evaluate(newest, now, |q| v.rollups(q))
            })
            .await;
            let transitions = match transitions {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!("alert evaluation failed: {e}");
                    continue;
                }
            };
            for t in transitions {
                tracing::warn!(
                    "alert {:?} {} ({:?} {:?} {} over {} min, value {:?}, {} views)",
                    t.alert.name,
                    t.event,
                    t.alert.metric,
                    t.alert.op,
                    t.alert.threshold,
                    t.window_minutes,
                    t.alert.value,
                    t.alert.views
                );
                let Some(w) = webhook.clone() else {
                    continue;
                };
                if cluster.as_ref().is_some_and(|c| !c.is_trainer()) {
                    // The group's trainer posts it.
                    continue;
                }
                let b3 = b.clone();
                actix_rt::spawn(async move {
                    let body = serde_json::to_vec(&t).unwrap_or_default();
                    let d = w.deliver(body).await;
                    let mut book = b3.lock().unwrap_or_else(|p| p.into_inner());
                    match &d.error {
                        None => book.delivered += 1,
                        Some(e) => {
                            book.failed += 1;
                            tracing::error!(
                                "alert {:?} {}: the webhook failed after {} attempts: {e}",
                                t.alert.name,
                                t.event,
                                d.attempts
                            );
                        }
                    }
                    book.last_delivery = Some(format!(
                        "{} {} at {}: {} after {} attempt(s)",
                        t.alert.name,
                        t.event,
                        t.at,
                        d.error
                            .clone()
                            .unwrap_or_else(|| format!("answered {}", d.status.unwrap_or(0))),
                        d.attempts
                    ));
                });
            }
        }
    });
    book
}
