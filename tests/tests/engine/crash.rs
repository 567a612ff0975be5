//! SIGKILL a child process running the engine under load, 20 times; after each restart every
//! acknowledged change is there and the invariants hold. `crash-soak` runs the same with more kills.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_changes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let seed = tests::now_ms();
    println!("crash test seed {seed}");
    let child = std::path::Path::new(env!("CARGO_BIN_EXE_crash-child"));
    let report = tests::crash::run(child, dir.path(), 20, seed)
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: {e:#}"));
    println!("{report:#?}");
    assert_eq!(report.kills, 20);
    // The load must have done something worth checking in every category.
    assert!(report.holds_acknowledged > 1_000, "{report:?}");
    assert!(
        report.confirms_acknowledged > 0 && report.releases_acknowledged > 0,
        "{report:?}"
    );
}
