use super::*;

fn ev(u: &str, t: &str, a: MusicAction, ts: i64) -> MusicEvent {
    MusicEvent {
        user_id: u.into(),
        track_id: t.into(),
        event_type: a,
        event_ts_ms: ts,
        session_id: "s".into(),
        device: "d".into(),
    }
}

fn track(t: &str, artist: &str, genre: &str) -> Track {
    Track {
        track_id: t.into(),
        artist: artist.into(),
        album: "al".into(),
        duration_ms: 1000,
        genre: genre.into(),
        title: format!("{t} title"),
    }
}

fn names(p: &Page<Scored>) -> Vec<(&str, u64)> {
    p.items.iter().map(|s| (s.name.as_str(), s.score)).collect()
}

#[test]
fn queries_follow_the_edges_both_ways() {
    let mut g = MusicGraph::default();
    for (t, a, gen) in [
        ("t1", "A", "rock"),
        ("t2", "A", "pop"),
        ("t3", "B", "rock"),
        ("t4", "C", "jazz"),
    ] {
        g.upsert_track(&track(t, a, gen));
    }
    use MusicAction::*;
    for (u, t, a, ts) in [
        ("u1", "t1", Like, 1),
        ("u1", "t1", Play, 2),
        ("u1", "t1", Play, 3),
        ("u1", "t2", Pause, 4),
        ("u2", "t1", Like, 5),
        ("u2", "t3", Like, 6),
        ("u2", "t4", Like, 7),
        ("u3", "t1", Like, 8),
        ("u3", "t3", Like, 9),
        ("u3", "t2", Pause, 10),
        ("u3", "t2", Pause, 11),
        ("u4", "t4", Play, 12),
    ] {
        g.observe(&ev(u, t, a, ts));
    }
    let played = g.user_tracks("u1", Play, 0, 10);
    assert_eq!(played.total, 1);
    assert_eq!((played.items[0].count, played.items[0].last_ts_ms), (2, 3));
    assert_eq!(played.items[0].artist.as_deref(), Some("A"));
    assert_eq!(g.user_tracks("nobody", Like, 0, 10).total, 0);
    // Paged by track id.
    let a = g.artist_tracks("A", 1, 5);
    assert_eq!(
        (a.total, a.items.len(), a.items[0].track.as_str()),
        (2, 1, "t2")
    );
    assert_eq!(
        g.genre_tracks("rock", 0, 5)
            .items
            .iter()
            .map(|t| t.listeners)
            .collect::<Vec<_>>(),
        vec![3, 2]
    );
    // Who paused what: u3 twice, then u1 once.
    let top = g.top_edges(Pause, 0, 10);
    let got: Vec<_> = top
        .items
        .iter()
        .map(|e| (e.user.as_str(), e.track.as_str(), e.count))
        .collect();
    assert_eq!(got, vec![("u3", "t2", 2), ("u1", "t2", 1)]);
    // u1 liked t1; u2 and u3 liked it too; they also liked t3 (both) and t4 (u2).
    assert_eq!(
        names(&g.also_liked("u1", 0, 10)),
        vec![("t3", 2), ("t4", 1)]
    );
    // What that visits: u1's one like (t1), then t1's likers and their
    // likes: u1 (1), u2 (3), u3 (2).
    assert_eq!(g.also_liked_work("u1", 100), 1 + 2 + 4 + 3);
    // Counted no further than one past the budget.
    assert_eq!(g.also_liked_work("u1", 5), 6);
    let ask = |query: &str, user: &str| GraphRequest {
        query: query.into(),
        user: Some(user.into()),
        action: None,
        artist: None,
        genre: None,
        offset: None,
        limit: None,
    };
    assert!(within(&g, &ask("also_liked", "U1"), 10));
    assert!(!within(&g, &ask("also_liked", "u1"), 9));
    assert!(within(&g, &ask("user_tracks", "u1"), 2));
    assert!(!within(&g, &ask("user_tracks", "u1"), 1));
    // A request that fails validation answers at once.
    assert!(within(&g, &ask("no_such_query", "u1"), 0));
    // Listeners of A (t1, t2): u1, u2, u3; u2 and u3 reach B, u2 reaches C.
    assert_eq!(
        names(&g.artist_neighbours("A", 0, 10)),
        vec![("B", 2), ("C", 1)]
    );
    assert_eq!(names(&g.genre_neighbours("jazz", 0, 10)), vec![("rock", 1)]);
    // A track moved to another artist leaves the old artist's index.
    g.upsert_track(&track("t2", "B", "pop"));
    assert_eq!(g.artist_tracks("A", 0, 5).total, 1);
    assert_eq!(g.artist_tracks("B", 0, 5).total, 2);
    // ... and its listeners with it: u1 now reaches B through t2.
    assert_eq!(
        names(&g.artist_neighbours("A", 0, 10)),
        vec![("B", 3), ("C", 1)]
    );
    // Rebuilding from aggregates gives the same ranking as observing.
    let mut h = MusicGraph::default();
    h.set_edge(
        "u3",
        "t2",
        MusicAgg {
            counts: [0, 0, 0, 2, 0],
            last_ts_ms: 11,
        },
    );
    h.set_edge(
        "u1",
        "t2",
        MusicAgg {
            counts: [0, 0, 0, 1, 0],
            last_ts_ms: 4,
        },
    );
    assert_eq!(h.top_edges(Pause, 0, 10), g.top_edges(Pause, 0, 10));
    assert_eq!(parse_action("LIKED"), Some(Like));
    assert_eq!(parse_action("pause"), Some(Pause));
    assert_eq!(parse_action("x"), None);
    // The request form names what is missing or wrong.
    let req = |q: &str| GraphRequest {
        query: q.into(),
        ..Default::default()
    };
    let err = |r: &GraphRequest| answer(&g, r).unwrap_err().to_string();
    let json = |r: &GraphRequest| serde_json::to_value(answer(&g, r).unwrap()).unwrap();
    assert!(err(&req("user_tracks")).contains("needs `user`"));
    let mut r = req("user_tracks");
    r.user = Some("U1".into());
    assert!(err(&r).contains("needs `action`"));
    r.action = Some("LIKED".into());
    let v = json(&r);
    assert_eq!(
        (v["total"].as_u64(), v["items"][0]["track"].as_str()),
        (Some(1), Some("t1"))
    );
    r.limit = Some(5000);
    assert!(err(&r).contains("limit 5000"));
    assert!(err(&req("nope")).contains("queries: user_tracks"));
    assert_eq!(json(&req("top"))["items"][0]["user"], "u3");
}

#[test]
fn kept_neighbour_counts_equal_a_walk_of_the_listeners() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let mut g = MusicGraph::default();
    let check = |g: &MusicGraph| {
        for (facet, names) in [
            (&g.artist_facet, &g.artist_facet.names),
            (&g.genre_facet, &g.genre_facet.names),
        ] {
            for name in names {
                let kept: FxHashMap<Arc<str>, u64> =
                    facet.neighbours(name).map(|(n, c)| (n.into(), c)).collect();
                assert_eq!(kept, facet.neighbours_by_walk(name), "{name}");
            }
        }
    };
    for step in 0..3000 {
        let t = format!("t{}", rng.gen_range(0..40));
        if rng.gen_bool(0.1) {
            // A track record: new, or moving the track and its listeners.
            let a = format!("a{}", rng.gen_range(0..8));
            let ge = format!("g{}", rng.gen_range(0..4));
            g.upsert_track(&track(&t, &a, &ge));
        } else {
            let u = format!("u{}", rng.gen_range(0..30));
            g.observe(&ev(&u, &t, MusicAction::Play, step));
        }
        if step % 100 == 0 {
            check(&g);
        }
    }
    check(&g);
    // Something was shared, so the check compared real counts.
    assert!(g.genre_facet.co.iter().any(|row| !row.is_empty()));
}

#[test]
fn a_ranked_page_is_its_slice_of_the_whole_ranking() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let ids: Vec<String> = (0..60).map(|i| format!("n{i:02}")).collect();
    // Many ties in score, so the name decides often.
    let scores: Vec<(&str, u64)> = ids
        .iter()
        .map(|n| (n.as_str(), rng.gen_range(0..6)))
        .collect();
    let mut whole = scores.clone();
    whole.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    for offset in [0, 1, 7, 30, 59, 60, 61, 500] {
        for limit in [1, 5, 20, 100] {
            let p = ranked_page(scores.iter().copied(), offset, limit);
            assert_eq!(p.total, 60);
            assert_eq!(p.offset, offset);
            let want: Vec<(&str, u64)> = whole.iter().skip(offset).take(limit).copied().collect();
            assert_eq!(names(&p), want, "offset {offset} limit {limit}");
        }
    }
    assert_eq!(ranked_page(std::iter::empty(), 0, 10).items, vec![]);
}

/// "Also liked" by walking every edge of every user met (what the liked
/// lists must always give).
fn also_liked_by_walk(g: &MusicGraph, user: &str) -> Page<Scored> {
    let like = MusicAction::Like.index();
    let Some(&me) = g.user_ix.get(user) else {
        return page(Vec::new(), 0, MAX_LIMIT);
    };
    let liked = |u: u32| {
        g.out[u as usize]
            .iter()
            .filter(|(_, e)| e.counts[like] > 0)
            .map(|(&t, _)| t)
    };
    let mine: FxHashSet<u32> = liked(me).collect();
    let peers: FxHashSet<u32> = (0..g.users.len() as u32)
        .filter(|&u| u != me && liked(u).any(|t| mine.contains(&t)))
        .collect();
    let mut scores: FxHashMap<u32, u64> = FxHashMap::default();
    for &u in &peers {
        for t in liked(u).filter(|t| !mine.contains(t)) {
            *scores.entry(t).or_default() += 1;
        }
    }
    let named = scores.into_iter().map(|(t, c)| (&*g.tracks[t as usize], c));
    ranked_page(named, 0, MAX_LIMIT)
}

#[test]
fn liked_lists_answer_as_a_walk_of_every_edge() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let mut g = MusicGraph::default();
    let users: Vec<String> = (0..25).map(|u| format!("u{u}")).collect();
    let check = |g: &MusicGraph| {
        for u in &users {
            assert_eq!(
                g.also_liked(u, 0, MAX_LIMIT),
                also_liked_by_walk(g, u),
                "{u}"
            );
        }
    };
    for step in 0..2000 {
        let u = &users[rng.gen_range(0..users.len())];
        let t = format!("t{}", rng.gen_range(0..30));
        let a = MusicAction::ALL[rng.gen_range(0..MusicAction::ALL.len())];
        g.observe(&ev(u, &t, a, step));
        if step % 250 == 0 {
            check(&g);
        }
    }
    check(&g);
    // Rebuilt from the aggregates (as at start), then edges set again: one
    // that loses its likes leaves the lists, one that gains them joins.
    let mut h = MusicGraph::default();
    for (u, out) in g.users.iter().zip(&g.out) {
        for (&t, agg) in out {
            h.set_edge(u, &g.tracks[t as usize], *agg);
        }
    }
    check(&h);
    let like = MusicAction::Like.index();
    let (u0, t0, agg) = h
        .users
        .iter()
        .zip(&h.out)
        .find_map(|(u, out)| {
            out.iter()
                .find(|(_, e)| e.counts[like] > 0)
                .map(|(&t, e)| (u.clone(), h.tracks[t as usize].clone(), *e))
        })
        .expect("a liked edge");
    let before = h.also_liked(&u0, 0, MAX_LIMIT);
    let mut unliked = agg;
    unliked.counts[like] = 0;
    h.set_edge(&u0, &t0, unliked);
    check(&h);
    h.set_edge(&u0, &t0, agg);
    check(&h);
    assert_eq!(h.also_liked(&u0, 0, MAX_LIMIT), before);
    assert!(before.total > 0, "the user had something to be answered");
}
