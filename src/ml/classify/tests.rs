use super::*;

#[test]
fn metrics_match_hand_computed_values() {
    // truth:     T T T F F F F F
    // predicted: T T F T F F F F
    let t = [true, true, true, false, false, false, false, false];
    let p = [true, true, false, true, false, false, false, false];
    let m = class_metrics(&t, &p);
    assert_eq!(m.confusion, [[4, 1], [1, 2]]);
    assert!((m.accuracy - 0.75).abs() < 1e-12);
    // class T: precision 2/3, recall 2/3; class F: precision 4/5, recall 4/5; weights 3/8, 5/8.
    let wp = 3.0 / 8.0 * (2.0 / 3.0) + 5.0 / 8.0 * 0.8;
    assert!((m.weighted_precision - wp).abs() < 1e-12);
    assert!((m.weighted_recall - wp).abs() < 1e-12);
    assert!((m.f1 - wp).abs() < 1e-12);
}

#[test]
fn string_index_orders_by_frequency_then_name() {
    let v = ["b", "a", "c", "a", "b", "d"];
    let m = string_index(v.iter().copied());
    let got: Vec<f64> = v.iter().map(|k| m[*k]).collect();
    assert_eq!(got, vec![1.0, 0.0, 2.0, 0.0, 1.0, 3.0]);
    assert_eq!(id_number("user_00042"), 42.0);
    assert_eq!(id_number("vid_7"), 7.0);
    // No digits: a stable number, the same every time, different ids apart.
    assert_eq!(id_number("alice"), id_number("alice"));
    assert_ne!(id_number("alice"), id_number("bob"));
    assert!(id_number("alice") < (1u64 << 31) as f64);
}

#[test]
fn the_tree_splits_inside_nodes_on_repeated_values() {
    // label = (a ≥ 2) AND (b == 1), a ∈ 0..4 and b ∈ {0, 1} repeated many
    // times: the second split must happen inside a child of the first, on
    // values repeated across both children (and both sides of the first
    // split predict "no", which linfa alone would prune away).
    let n = 400;
    let x = Array2::from_shape_fn((n, 2), |(i, j)| {
        if j == 0 {
            (i % 4) as f64
        } else {
            ((i / 4) % 2) as f64
        }
    });
    let y: Vec<bool> = (0..n)
        .map(|i| (x[[i, 0]] >= 2.0) && (x[[i, 1]] == 1.0))
        .collect();
    let t = TreeNode::grow(&x, &y, (0..n).collect(), 0, 8).unwrap();
    for i in 0..n {
        assert_eq!(t.predict(&[x[[i, 0]], x[[i, 1]]]), y[i], "row {i}");
    }
    assert_eq!(t.shape(), (2, 3));
    // Thresholds sit halfway between neighbouring values.
    let TreeNode::Split { threshold, .. } = &t else {
        panic!("{t:?}")
    };
    assert!([0.5, 1.5].contains(threshold), "{threshold}");
}

#[test]
fn classifiers_learn_the_engagement_label() {
    let mut g = crate::synth::generate::VideoGen::new(
        crate::synth::generate::World::new(200, 60, 4),
        4,
        1_735_689_600_000,
        50,
    );
    let events: Vec<VideoEvent> = (0..3000).map(|_| g.next_event()).collect();
    let p = ClassifyParams {
        svm_max_rows: 800,
        ..ClassifyParams::default()
    };
    let r = train_and_evaluate(&events, &p).unwrap();
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].0.test_rows, 600);
    assert!(r[0].0.metrics.accuracy > 0.98, "{:?}", r[0].0);
    assert!(r[1].0.metrics.accuracy > 0.85, "{:?}", r[1].0);
    assert_eq!(r[1].0.train_rows, 800);
    // The stored artifact predicts as the evaluated model did.
    let (_, test) = split(events.len(), p.test_fraction, p.seed);
    let held: Vec<VideoEvent> = test.iter().map(|&i| events[i].clone()).collect();
    for (report, bundle) in &r {
        let bytes = postcard::to_stdvec(bundle).unwrap();
        let back: ClassifierBundle = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back.classifier, bundle.classifier);
        assert_eq!(back.classifier.kind(), report.model);
        let again = back.classifier.predict(&held);
        let recorded: Vec<bool> = back.predictions.iter().map(|p| p.predicted).collect();
        assert_eq!(again, recorded, "{}", report.model);
        let truth: Vec<bool> = held.iter().map(label).collect();
        assert_eq!(class_metrics(&truth, &again), report.metrics);
    }
    let e = train_and_evaluate(
        &events,
        &ClassifyParams {
            svm_max_rows: 5,
            ..p
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("svm_max_rows"), "{e}");
}
