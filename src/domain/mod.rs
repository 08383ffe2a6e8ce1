//! The vocabulary every layer shares: events and their kinds, source records
//! and positions, rejections, timestamps, the genre/region/resolution
//! vocabularies; and the small utilities every layer uses: progress bars for
//! command-line work, supervised worker threads.

pub mod event;
pub mod progress;
pub mod record;
pub mod reject;
pub mod setting;
pub mod timefmt;
pub mod vocab;
pub mod worker;
