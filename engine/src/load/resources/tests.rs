//! The cost of resolving `depends_on`.

use super::*;
use crate::diag::Diagnostics;
use crate::provider::Providers;

fn decl(file: &Arc<SourceFile>, name: &str, deps: &[&str]) -> Decl {
    Decl {
        module: "m".into(),
        kind: "file".into(),
        placement: Placement::EachHost,
        file: Arc::clone(file),
        span: 0..0,
        name: Spanned::new(0..0, name.into()),
        on: None,
        depends_on: deps
            .iter()
            .map(|d| Spanned::new(0..0, d.to_string()))
            .collect(),
        declared: Declared::default(),
        lab_skip: None,
        lab_variant: None,
        serial: None,
    }
}

fn instance(name: &str, host: String) -> Instance {
    Instance {
        address: Address {
            module: "m".into(),
            kind: "file".into(),
            name: name.into(),
            host: Some(host.clone()),
        },
        members: Vec::new(),
        attrs: Attrs::new(),
        depends_on: Vec::new(),
        outputs: BTreeMap::new(),
        gate: None,
    }
}

/// Issue 11, item 13: resolving `depends_on` is linear in the instances. Before 6dc598a each
/// dependent instance searched the list of its dependency's hosts: 20,000 hosts cost
/// 20,000 x 20,000 / 2 string comparisons per dependency. Timed against copying the
/// instances (linear, similar allocations, same machine load), best of three: linear
/// resolution costs a few copies, the old search hundreds.
#[test]
fn depends_on_resolution_is_linear() {
    const HOSTS: usize = 20_000;
    let file = SourceFile::new("m.toml".into(), String::new());
    let decls = vec![
        decl(&file, "base", &[]),
        decl(&file, "app", &["file.base", "m.file.base[h00001]"]),
    ];
    let mut instances = Vec::with_capacity(2 * HOSTS);
    let mut ranges = Vec::new();
    for d in &decls {
        let start = instances.len();
        for h in 1..=HOSTS {
            instances.push(instance(d.name.get_ref(), format!("h{h:05}")));
        }
        ranges.push(start..instances.len());
    }
    let providers = Providers::default();
    let env = |_: &str| None;
    let mut loader = Loader {
        dir: ".".into(),
        diags: Diagnostics::default(),
        digest: sha2::Sha256::new(),
        env: &env,
        overlay: None,
        providers: &providers,
        host_defaults: Default::default(),
        networks: Default::default(),
    };
    let (mut copy, mut resolve) = (std::time::Duration::MAX, std::time::Duration::MAX);
    let mut resolved = Vec::new();
    for _ in 0..3 {
        let started = std::time::Instant::now();
        resolved = instances.clone();
        copy = copy.min(started.elapsed());
        let started = std::time::Instant::now();
        loader.resolve_depends_on(&decls, &ranges, &mut resolved);
        resolve = resolve.min(started.elapsed());
    }
    assert!(loader.diags.is_empty());
    // Every app instance waits for the base on its own host, and for the one named.
    let deps: Vec<String> = resolved[HOSTS + 41]
        .depends_on
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(deps, ["m.file.base[h00042]", "m.file.base[h00001]"]);
    assert!(
        resolve < copy * 20,
        "resolving depends_on of {HOSTS} hosts took {resolve:?}, copying the instances {copy:?}"
    );
}
