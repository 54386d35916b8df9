use super::*;

fn spread(x: f64) -> Option<Spread> {
    Spread::of(&[x])
}

fn summary(variant: Variant) -> Summary {
    Summary {
        variant,
        rps: None,
        rps_vs_none: None,
        rps_vs_noop: None,
        rps_vs_local: None,
        saturation_p50_us: None,
        saturation_p99_us: None,
        saturation_denied: None,
        fixed_p50_us: None,
        fixed_p99_us: None,
        added_p50_us: None,
        added_p99_us: None,
        fixed_denied: None,
        decision_p50_us: None,
        decision_p99_us: None,
        periodic_p99_us: None,
        periodic_max_us: None,
        cpu_us: None,
        cpu_us_vs_noop: None,
        fixed_cpu_us: None,
        slot_calls: None,
        socket_errors: 0,
    }
}

fn settings(rounds: u32) -> Settings {
    Settings {
        rounds,
        variants: Vec::new(),
        descriptions: BTreeMap::new(),
        mix: Mix { keys: 1000, offset: 0, hot: false },
        mix_description: String::new(),
        warmup: Duration::ZERO,
        saturation: Duration::ZERO,
        wrk_connections: 32,
        fixed_rate: 2000.0,
        fixed_duration: Duration::ZERO,
        fixed_connections: 4,
        envoy_workers: 1,
    }
}

#[test]
fn the_targets_are_the_issues_thresholds() {
    let local = Summary {
        rps_vs_noop: spread(0.74),
        cpu_us_vs_noop: spread(7.9),
        added_p50_us: spread(49.0),
        added_p99_us: spread(260.0),
        ..summary(Variant::SluiceLocal)
    };
    let bare = Summary { rps_vs_noop: spread(0.86), ..summary(Variant::SluiceLocalNoHeaders) };
    let global = Summary { rps_vs_local: spread(0.95), added_p50_us: spread(400.0), added_p99_us: spread(490.0), ..summary(Variant::SluiceGlobal) };
    let c = Comparison { runs: Vec::new(), summaries: vec![local, bare, global] };
    let settings = settings(1);
    let met: Vec<(String, Option<bool>)> = targets(&c, &settings, false, "t").into_iter().map(|t| (t.name, t.met)).collect();
    let want = [
        ("sluice-local ≥ 0.75× the do-nothing wasm filter (default headers) (t)", Some(false)),
        ("sluice-local-no-headers ≥ 0.85× the do-nothing wasm filter (response_headers none) (t)", Some(true)),
        ("sluice-local Envoy CPU over noop-wasm per request (t)", Some(true)),
        ("sluice-local added latency p50 at 2,000 req/s (t)", Some(true)),
        ("sluice-local added latency p99 at 2,000 req/s (t)", Some(false)),
        ("sluice-global added latency p99 at 2,000 req/s (t)", Some(true)),
        ("sluice-global ≥ 0.95× sluice-local (t)", Some(true)),
    ];
    let want: Vec<(String, Option<bool>)> = want.iter().map(|(n, m)| (n.to_string(), *m)).collect();
    assert_eq!(met, want, "no target for sluice-global's p50, and none for the peers when they did not run");
}

#[test]
fn a_latency_target_has_no_verdict_when_no_filter_moved_more_than_its_margin() {
    let settings = settings(3);
    let local = Summary { added_p50_us: spread(40.0), added_p99_us: spread(-1_477.0), ..summary(Variant::SluiceLocal) };
    let global = Summary { added_p99_us: spread(744.0), ..summary(Variant::SluiceGlobal) };
    let peer = Summary { added_p99_us: spread(2_188.0), ..summary(Variant::EnvoyRatelimitLimitadorRedis) };
    // No filter's own p50 moved 30 µs between rounds, its p99 3,160.
    let none = Summary { fixed_p50_us: Spread::of(&[228.0, 242.0, 258.0]), fixed_p99_us: Spread::of(&[389.0, 2_577.0, 3_549.0]), ..summary(Variant::None) };
    let c = Comparison { runs: Vec::new(), summaries: vec![none, local, global, peer] };
    let verdicts: Vec<(String, &str)> = targets(&c, &settings, false, "t")
        .iter()
        .filter(|t| t.name.contains("latency") || t.name.contains("below"))
        .map(|t| (t.name.clone(), t.verdict()))
        .collect();
    let want = [
        ("sluice-local added latency p50 at 2,000 req/s (t)", "met"),
        ("sluice-local added latency p99 at 2,000 req/s (t)", "too noisy to tell"),
        ("sluice-global added latency p99 at 2,000 req/s (t)", "too noisy to tell"),
        ("sluice-global added p99 below envoy-ratelimit-limitador-redis's (t)", "too noisy to tell"),
    ];
    assert_eq!(verdicts, want.map(|(n, v)| (n.to_string(), v)));
    // A quiet machine: the same figures are judged.
    let quiet = Summary { fixed_p50_us: Spread::of(&[119.0, 129.0, 163.0]), fixed_p99_us: Spread::of(&[200.0, 242.0, 252.0]), ..summary(Variant::None) };
    let c = Comparison { summaries: [vec![quiet], c.summaries[1..].to_vec()].concat(), ..c };
    let verdicts: Vec<&str> =
        targets(&c, &settings, false, "t").iter().filter(|t| t.name.contains("latency") || t.name.contains("below")).map(|t| t.verdict()).collect();
    assert_eq!(verdicts, ["met", "met", "**missed**", "met"]);
}

#[test]
fn quantiles_of_what_was_recorded_between_two_readings() {
    let inf = f64::INFINITY;
    let before = [(10.0, 5.0), (100.0, 8.0), (1000.0, 8.0), (inf, 8.0)];
    // 100 more: 95 under 10 µs, 4 under 100, one under 1000.
    let after = [(10.0, 100.0), (100.0, 107.0), (1000.0, 108.0), (inf, 108.0)];
    assert_eq!(bucket_quantiles(&before, &after), Some((100.0, 1000.0)));
    assert_eq!(bucket_quantiles(&before, &before), None, "nothing recorded");
}
