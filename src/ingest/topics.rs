//! Which topic carries which kind of record. A configured topic is either a
//! plain name or, starting with `^`, a regular expression over topic names
//! (librdkafka subscribes to it as a pattern); this file is the one place that
//! rule is written.

use std::collections::BTreeMap;

use regex::Regex;
use thiserror::Error;

use crate::domain::event::Kind;

/// One configured topic: a name, or a pattern over names.
#[derive(Debug, Clone)]
pub enum TopicSpec {
    Name(String),
    Pattern(Regex),
}

#[derive(Debug, Clone, PartialEq, Error)]
#[error("topic {topic:?}: {message}")]
pub struct TopicError {
    pub topic: String,
    pub message: String,
}

impl TopicSpec {
    /// Reads a configured topic (`^…` is a pattern).
    pub fn parse(t: &str) -> Result<TopicSpec, TopicError> {
        if t.trim().is_empty() {
            return Err(TopicError {
                topic: t.to_string(),
                message: "must name a topic or a ^pattern".into(),
            });
        }
        if t.starts_with('^') {
            Regex::new(t)
                .map(TopicSpec::Pattern)
                .map_err(|e| TopicError {
                    topic: t.to_string(),
                    message: format!("bad pattern: {e}"),
                })
        } else {
            Ok(TopicSpec::Name(t.to_string()))
        }
    }

    /// The plain topic named, if it is not a pattern (what producers write to
    /// and the embedded broker creates).
    pub fn plain(t: &str) -> Option<&str> {
        (!t.starts_with('^')).then_some(t)
    }
}

/// Maps a record's topic to the kind of records it carries.
#[derive(Debug, Clone)]
pub struct TopicKinds {
    exact: Vec<(String, Kind)>,
    patterns: Vec<(Regex, Kind)>,
}

impl TopicKinds {
    pub fn new(topics: &BTreeMap<Kind, String>) -> Result<TopicKinds, TopicError> {
        let mut exact = Vec::new();
        let mut patterns = Vec::new();
        for (kind, t) in topics {
            match TopicSpec::parse(t)? {
                TopicSpec::Name(n) => exact.push((n, *kind)),
                TopicSpec::Pattern(re) => patterns.push((re, *kind)),
            }
        }
        Ok(TopicKinds { exact, patterns })
    }

    pub fn kind_of(&self, topic: &str) -> Option<Kind> {
        self.exact
            .iter()
            .find(|(t, _)| t == topic)
            .map(|(_, k)| *k)
            .or_else(|| {
                self.patterns
                    .iter()
                    .find(|(re, _)| re.is_match(topic))
                    .map(|(_, k)| *k)
            })
    }

    /// What to subscribe to (librdkafka treats `^...` as a pattern).
    pub fn subscription(&self) -> Vec<String> {
        self.exact
            .iter()
            .map(|(t, _)| t.clone())
            .chain(self.patterns.iter().map(|(r, _)| r.as_str().to_string()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_map_to_kinds_exactly_or_by_pattern() {
        let topics = [
            (Kind::Video, "views".to_string()),
            (Kind::Music, "^music\\..*".to_string()),
        ]
        .into_iter()
        .collect();
        let k = TopicKinds::new(&topics).unwrap();
        assert_eq!(k.kind_of("views"), Some(Kind::Video));
        assert_eq!(k.kind_of("music.eu"), Some(Kind::Music));
        assert_eq!(k.kind_of("views2"), None);
        assert_eq!(k.kind_of("xmusic.eu"), None);
        assert_eq!(
            k.subscription(),
            vec!["views".to_string(), "^music\\..*".to_string()]
        );
        let bad = [(Kind::Video, "^(".to_string())].into_iter().collect();
        assert!(TopicKinds::new(&bad).is_err());
    }
}
