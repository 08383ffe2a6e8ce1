use super::*;
use crate::ml::live::tests::champion;
use crate::ml::serve::Taste;

/// `fresh` watched by users `from..to` (weight 2), observed as video deltas.
fn watched(fold: &mut ItemFold, item: &str, users: std::ops::Range<u32>) {
    for u in users {
        fold.observe(item, Domain::Video, &format!("u{u}"), 2.0, true);
    }
}

fn trained(c: &Champion) -> impl Fn(&str, &mut Vec<f32>) -> bool + Sync + '_ {
    let r = &c.recommender;
    move |u, into| match r.user_row(u) {
        Some(row) => {
            into.extend_from_slice(r.bundle().model.user(row as usize));
            true
        }
        None => false,
    }
}

#[test]
fn a_new_item_takes_the_taste_of_its_users_and_ranks_for_users_like_them() {
    let (c, _) = champion(false);
    let mut fold = ItemFold::new(3, 100);
    fold.follow(&c);
    // Two users are not enough; the third folds it in.
    watched(&mut fold, "fresh", 0..2);
    assert!(fold.solve(trained(&c)).new.is_empty());
    assert_eq!(fold.pending(), 1);
    watched(&mut fold, "fresh", 2..6);
    let solved = fold.solve(trained(&c));
    assert_eq!(solved.new.len(), 1, "{solved:?}");
    let (row, users) = &solved.new[0];
    assert_eq!(*row, 20, "the row after the champion's 20 items");
    assert_eq!(users.len(), 6);
    assert_eq!(fold.pending(), 0);
    let items = fold.items();
    assert_eq!(items.row("fresh"), Some(20));
    // Its users are of the first block: it scores higher there.
    let model = &c.recommender.bundle().model;
    let y = items.item(0);
    let score = |u: usize| -> f32 { model.user(u).iter().zip(y).map(|(a, b)| a * b).sum() };
    let first: f32 = (10..20).map(score).sum();
    let second: f32 = (20..30).map(score).sum();
    assert!(first > second + 1.0, "{first} vs {second}");
    // A first-block user who has not seen it gets it in their list, with a
    // reason from what they watched; a second-block user does not.
    let list = |u: u32| {
        c.recommender
            .recommend_taste(Taste::Trained(u), 5, Domain::Video, Some(&items), |_, _| {})
    };
    let mine = list(12);
    let got = mine.iter().find(|r| r.item == "fresh");
    let got = got.unwrap_or_else(|| panic!("{mine:?}"));
    assert!(got.reason.starts_with("because you watched v"), "{got:?}");
    assert!(list(25).iter().all(|r| r.item != "fresh"));
    // Seen (a folded user's seen set holds its row): not listed again.
    let x = model.user(12).to_vec();
    let mut seen = c.recommender.seen_of(12).to_vec();
    seen.push(20);
    let again = c.recommender.recommend_taste(
        Taste::Folded {
            factors: &x,
            seen: &seen,
            weights: &[],
            user: Some(12),
        },
        5,
        Domain::Video,
        Some(&items),
        |_, _| {},
    );
    assert!(again.iter().all(|r| r.item != "fresh"), "{again:?}");
    // Music lists never hold it.
    assert!(c
        .recommender
        .recommend_taste(
            Taste::Trained(12),
            5,
            Domain::Music,
            Some(&items),
            |_, _| {}
        )
        .is_empty());
}

#[test]
fn an_item_is_solved_again_when_its_users_grow_by_a_quarter() {
    let (c, _) = champion(false);
    let mut fold = ItemFold::new(3, 100);
    fold.follow(&c);
    watched(&mut fold, "fresh", 0..8);
    assert_eq!(fold.solve(trained(&c)).new.len(), 1);
    watched(&mut fold, "fresh", 8..9);
    let s = fold.solve(trained(&c));
    assert_eq!(
        (s.new.len(), s.updated),
        (0, 0),
        "one more of 8 users: not yet"
    );
    watched(&mut fold, "fresh", 9..10);
    assert_eq!(fold.solve(trained(&c)).updated, 1);
    // Users the champion does not know are left out of the solve.
    let mut unknown = ItemFold::new(3, 100);
    unknown.follow(&c);
    for u in 0..5 {
        unknown.observe("other", Domain::Video, &format!("stranger{u}"), 1.0, true);
    }
    assert!(unknown.solve(trained(&c)).new.is_empty());
}

#[test]
fn followed_items_and_their_users_are_bounded_and_a_new_champion_starts_afresh() {
    let (c, _) = champion(false);
    let mut fold = ItemFold::new(3, 8);
    fold.follow(&c);
    for i in 0..40 {
        // Item i has 1 + i % 5 users.
        for u in 0..=(i % 5) {
            fold.observe(
                &format!("item{i}"),
                Domain::Video,
                &format!("u{u}"),
                1.0,
                true,
            );
        }
    }
    assert!(fold.followed.len() <= 8, "{}", fold.followed.len());
    assert!(fold.dropped >= 32);
    for u in 0..(MAX_ITEM_USERS + 50) {
        fold.observe("busy", Domain::Video, &format!("x{u}"), 1.0, true);
    }
    assert!(fold
        .followed
        .get("busy")
        .is_none_or(|f| f.users.len() <= MAX_ITEM_USERS));
    watched(&mut fold, "fresh", 0..5);
    fold.solve(trained(&c));
    // Folded items are bounded too: the followed ones past the bound are not folded.
    let mut full = ItemFold::new(1, 2);
    full.follow(&c);
    for i in 0..3 {
        watched(&mut full, &format!("t{i}"), 0..1);
        full.solve(trained(&c));
    }
    assert_eq!(full.items().len(), 2);
    assert!(full.dropped >= 1);
    // Followed items with three users or more are folded in: "fresh" among them.
    let items = fold.items();
    assert!(
        items.row("fresh").is_some() && items.len() <= 8,
        "{items:?}"
    );
    let mut next = champion(false).0;
    next.id = 4;
    fold.follow(&next);
    assert!(fold.items().is_empty() && fold.followed.is_empty());
}
