// Dense reference algebra reads best indexed.
#![allow(clippy::needless_range_loop)]

use super::*;

/// Solves A x = b densely (Gaussian elimination with partial pivoting), f64.
fn dense_solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for c in 0..n {
        let piv = (c..n)
            .max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))
            .unwrap();
        a.swap(c, piv);
        b.swap(c, piv);
        for r in c + 1..n {
            let m = a[r][c] / a[c][c];
            for k in c..n {
                a[r][k] -= m * a[c][k];
            }
            b[r] -= m * b[c];
        }
    }
    let mut x = vec![0.0; n];
    for r in (0..n).rev() {
        x[r] = (b[r] - (r + 1..n).map(|k| a[r][k] * x[k]).sum::<f64>()) / a[r][r];
    }
    x
}

#[test]
fn cg_with_enough_steps_matches_the_direct_solution() {
    let f = 4;
    let y: Vec<f32> = (0..6 * f)
        .map(|i| ((i * 7 % 11) as f32 - 5.0) / 7.0)
        .collect();
    let cols = [0u32, 2, 5];
    let conf = [3.0f32, 1.5, 5.0];
    let reg = 0.1f32;
    let yty = gram(&y, f, reg);
    let mut x = vec![0.01f32; f];
    let mut s = Scratch::new(f);
    let mut exact = vec![0.5f32; f];
    solve_row_exact(&mut exact, &yty, &y, f, &cols, &conf, 0.0, false, &mut s);
    solve_row(&mut x, &yty, &y, f, &cols, &conf, 0.0, 50, &mut s);
    // A = YᵀY + λI + Σ (c−1) yᵢyᵢᵀ, b = Σ c yᵢ
    let yi = |i: usize| -> Vec<f64> { y[i * f..(i + 1) * f].iter().map(|&v| v as f64).collect() };
    let mut a = vec![vec![0.0f64; f]; f];
    for i in 0..6 {
        let v = yi(i);
        for r in 0..f {
            for c in 0..f {
                a[r][c] += v[r] * v[c];
            }
        }
    }
    let mut b = vec![0.0; f];
    for (&i, &c) in cols.iter().zip(&conf) {
        let v = yi(i as usize);
        for r in 0..f {
            b[r] += c as f64 * v[r];
            for k in 0..f {
                a[r][k] += (c as f64 - 1.0) * v[r] * v[k];
            }
        }
    }
    for r in 0..f {
        a[r][r] += reg as f64;
    }
    let want = dense_solve(a, b);
    for ((got, exact), want) in x.iter().zip(&exact).zip(&want) {
        assert!((*got as f64 - want).abs() < 1e-3, "{x:?} vs {want:?}");
        assert!((*exact as f64 - want).abs() < 1e-4, "{exact:?} vs {want:?}");
    }
}

#[test]
fn nonnegative_exact_solve_meets_the_kkt_conditions() {
    let f = 4;
    let y: Vec<f32> = (0..6 * f)
        .map(|i| ((i * 5 % 13) as f32 - 6.0) / 5.0)
        .collect();
    let (cols, conf) = ([1u32, 3, 4], [4.0f32, 2.0, 3.0]);
    let yty = gram(&y, f, 0.1);
    let mut s = Scratch::new(f);
    let mut x = vec![0.0f32; f];
    solve_row_exact(&mut x, &yty, &y, f, &cols, &conf, 0.0, true, &mut s);
    // Rebuild A and b, then check x ≥ 0, (Ax − b)ⱼ ≈ 0 where xⱼ > 0 and ≥ 0 where xⱼ = 0.
    let mut a = vec![0.0f64; f * f];
    let mut b = vec![0.0f64; f];
    for r in 0..f {
        for k in 0..f {
            a[r * f + k] = yty[r * f + k] as f64;
        }
    }
    for (&i, &c) in cols.iter().zip(&conf) {
        let yi = &y[i as usize * f..(i as usize + 1) * f];
        for r in 0..f {
            b[r] += c as f64 * yi[r] as f64;
            for k in 0..f {
                a[r * f + k] += (c as f64 - 1.0) * yi[r] as f64 * yi[k] as f64;
            }
        }
    }
    assert!(x.contains(&0.0) && x.iter().any(|&v| v > 0.0), "{x:?}");
    for j in 0..f {
        let g: f64 = (0..f).map(|k| a[j * f + k] * x[k] as f64).sum::<f64>() - b[j];
        assert!(x[j] >= 0.0);
        if x[j] > 0.0 {
            assert!(g.abs() < 1e-4, "{j}: {g}");
        } else {
            assert!(g > -1e-4, "{j}: {g}");
        }
    }
}

#[test]
fn learns_two_planted_blocks() {
    // Users 0..20 like items 0..10, users 20..40 like items 10..20; each user saw 6.
    let mut t = Vec::new();
    for u in 0..40u32 {
        let base = if u < 20 { 0 } else { 10 };
        for k in 0..6 {
            t.push((u, base + (u * 3 + k * 7) % 10, 1.0 + (k % 2) as f32));
        }
    }
    let m = Csr::from_triplets(40, 20, &t);
    let params = AlsParams {
        factors: 4,
        iterations: 10,
        regularization: 0.05,
        ..AlsParams::default()
    }
    .check()
    .unwrap();
    let mut iters = 0;
    let model = fit(&params, &m, |_, _| iters += 1).unwrap();
    assert_eq!(iters, 10);
    for u in 0..40 {
        let own = if u < 20 { 0..10 } else { 10..20 };
        let other = if u < 20 { 10..20 } else { 0..10 };
        let best_own = own.map(|i| model.score(u, i)).fold(f32::MIN, f32::max);
        let best_other = other.map(|i| model.score(u, i)).fold(f32::MIN, f32::max);
        assert!(
            best_own > best_other + 0.1,
            "user {u}: {best_own} vs {best_other}"
        );
    }
}

#[test]
fn parameters_are_checked_once_with_names() {
    let e = AlsParams {
        factors: 0,
        ..AlsParams::default()
    }
    .check()
    .unwrap_err();
    assert!(
        e.to_string().contains("factors") && e.to_string().contains("1..=1024"),
        "{e}"
    );
    let e = AlsParams {
        alpha: -1.0,
        ..AlsParams::default()
    }
    .check()
    .unwrap_err();
    assert!(e.to_string().contains("alpha"), "{e}");
    let empty = Csr::from_triplets(3, 3, &[]);
    assert_eq!(
        fit(&AlsParams::default().check().unwrap(), &empty, |_, _| {}),
        Err(AlsError::Empty)
    );
}

/// Users in 4 blocks of taste over 60 items, 8 pairs each (seeded).
fn blocks(users: u32) -> Csr {
    let mut t = Vec::new();
    for u in 0..users {
        let base = (u % 4) * 15;
        for k in 0..8 {
            t.push((u, base + (u * 7 + k * 11) % 15, 1.0 + (k % 3) as f32));
        }
    }
    Csr::from_triplets(users as usize, 60, &t)
}

#[test]
fn a_warm_start_from_a_converged_model_stays_there_in_one_iteration() {
    let m = blocks(200);
    let params = |iterations| {
        AlsParams {
            factors: 6,
            iterations,
            regularization: 0.1,
            exact: true,
            ..AlsParams::default()
        }
        .check()
        .unwrap()
    };
    let converged = fit(&params(60), &m, |_, _| {}).unwrap();
    let warm = WarmStart {
        from: &converged,
        users: (0..200).map(Some).collect(),
        items: (0..60).map(Some).collect(),
    };
    assert_eq!(warm.reused(), (200, 60));
    let again = fit_from(&params(1), &m, Some(&warm), |_, _| {}).unwrap();
    let cold = fit(&params(1), &m, |_, _| {}).unwrap();
    let gap = |a: &AlsModel| {
        (0..200)
            .flat_map(|u| (0..60).map(move |i| (u, i)))
            .map(|(u, i)| (a.score(u, i) - converged.score(u, i)).abs())
            .fold(0f32, f32::max)
    };
    assert!(gap(&again) < 1e-2, "warm: {}", gap(&again));
    assert!(
        gap(&cold) > 10.0 * gap(&again).max(1e-4),
        "cold: {}",
        gap(&cold)
    );
}

#[test]
fn a_warm_start_maps_rows_by_name_and_new_rows_start_fresh() {
    // The model before knew users 0..100 only, in another order.
    let before = fit(
        &AlsParams {
            factors: 6,
            iterations: 20,
            exact: true,
            ..AlsParams::default()
        }
        .check()
        .unwrap(),
        &blocks(100),
        |_, _| {},
    )
    .unwrap();
    let m = blocks(200);
    let warm = WarmStart {
        from: &before,
        users: (0..200u32).map(|u| (u < 100).then_some(u)).collect(),
        items: (0..60).map(Some).collect(),
    };
    assert_eq!(warm.reused(), (100, 60));
    let p = AlsParams {
        factors: 6,
        iterations: 2,
        exact: true,
        ..AlsParams::default()
    }
    .check()
    .unwrap();
    let model = fit_from(&p, &m, Some(&warm), |_, _| {}).unwrap();
    // Every user, old or new, prefers their own block.
    for u in 0..200usize {
        let own = (u % 4) * 15;
        let best_own = (own..own + 15)
            .map(|i| model.score(u, i))
            .fold(f32::MIN, f32::max);
        let best_other = (0..60)
            .filter(|i| !(own..own + 15).contains(i))
            .map(|i| model.score(u, i))
            .fold(f32::MIN, f32::max);
        assert!(
            best_own > best_other,
            "user {u}: {best_own} vs {best_other}"
        );
    }
    // A warm start of another factor count is ignored (a cold start).
    let other = AlsParams {
        factors: 3,
        iterations: 2,
        exact: true,
        ..AlsParams::default()
    }
    .check()
    .unwrap();
    let a = fit_from(&other, &m, Some(&warm), |_, _| {}).unwrap();
    let b = fit(&other, &m, |_, _| {}).unwrap();
    assert_eq!(a.user_factors, b.user_factors);
}
