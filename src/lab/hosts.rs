//! Lab hosts: the network, one container per stack host, their keys, and the overlay that
//! records them.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use kz_engine::lab::{Cidr, LabHost, LabOverlay, lab_dir};
use kz_engine::model::{Instance, LabInit, Stack};

use super::podman::Podman;
use super::{STACK_LABEL, container_name, image, nested, network_name, systemd};
use crate::output::Shell;

/// How long a new lab host has to make its host keys and answer on port 22.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// Makes (or completes) the lab of `stack` with `selected` hosts, and writes its overlay.
pub async fn up(
    shell: &Shell,
    podman: &Podman,
    stack: &Stack,
    selected: &[String],
    privileged: bool,
) -> Result<LabOverlay, String> {
    for name in selected {
        if name.len() > 63 {
            return Err(format!(
                "host `{name}` cannot be a lab host: a hostname has at most 63 characters"
            ));
        }
    }
    let public = lab_key(stack).await?;
    let owner = lab_owner(&stack.dir);
    let (network, subnet) = lab_network(podman, stack, &owner).await?;
    let overlay = lab_addresses(stack, selected, &network, &subnet)?;

    // Hosts running or building containers of their own need a privileged container (nested
    // podman), with the lab image saved for them to load as `debian:12`.
    let nested: Vec<&str> = stack
        .instances
        .iter()
        .filter(|i| matches!(i.kind(), "container" | "image"))
        .flat_map(Instance::hosts)
        .collect();
    let base_image = if privileged || selected.iter().any(|h| nested.contains(&h.as_str())) {
        Some(image::save(podman).await?.display().to_string())
    } else {
        None
    };
    let systemd = stack.lab.init == LabInit::Systemd;
    let mut starts = tokio::task::JoinSet::new();
    for name in selected {
        let lab = overlay.hosts[name].clone();
        let podman = podman.clone();
        let runs_containers = privileged || nested.contains(&name.as_str());
        let spec = ContainerSpec {
            stack: stack.name.clone(),
            owner: owner.clone(),
            host: name.clone(),
            network: network.clone(),
            public_key: public.display().to_string(),
            privileged: runs_containers || systemd,
            base_image: base_image.clone().filter(|_| runs_containers),
            systemd,
            docker: stack.hosts.get(name).is_some_and(|h| {
                h.settings.get("container_runtime").map(String::as_str) == Some("docker")
            }),
        };
        starts.spawn(async move {
            let key = start_host(&podman, &spec, &lab).await;
            (spec.host, lab.address, key)
        });
    }
    shell.errln(&format!(
        "lab: starting {} on {network} ({subnet})",
        crate::commands::count(selected.len(), "host")
    ));
    let mut keys = BTreeMap::new();
    let mut failures = Vec::new();
    while let Some(joined) = starts.join_next().await {
        match joined {
            Ok((host, address, Ok(key))) => {
                keys.insert(host, (address, key));
            }
            Ok((host, _, Err(e))) => failures.push(format!("{host}: {e}")),
            Err(e) => failures.push(e.to_string()),
        }
    }
    record_keys(stack, &keys)?;
    kz_engine::ops::write_text_atomically(
        &LabOverlay::path(&stack.dir),
        &serde_json::to_string_pretty(&overlay).map_err(|e| e.to_string())?,
    )?;
    if !failures.is_empty() {
        return Err(format!(
            "lab hosts failed to start:\n  {}",
            failures.join("\n  ")
        ));
    }
    Ok(overlay)
}

/// The lab's private directory and root key (made once); returns the public key's absolute path.
async fn lab_key(stack: &Stack) -> Result<std::path::PathBuf, String> {
    let dir = lab_dir(&stack.dir);
    create_private_dir(&dir)?;
    // The lab is disposable and machine-specific: keep it out of git even without a .gitignore.
    kz_engine::ops::write_text_atomically(&dir.join(".gitignore"), "*\n")?;
    let key = LabOverlay::key_path(&stack.dir);
    if !key.exists() {
        let k = key.display().to_string();
        let comment = format!("kz-lab-{}", stack.name);
        super::run_tool(
            "ssh-keygen",
            &["-q", "-t", "ed25519", "-N", "", "-C", &comment, "-f", &k],
            Duration::from_secs(30),
        )
        .await?;
    }
    // podman takes a relative path for a volume name: the mount needs it absolute.
    std::fs::canonicalize(key.with_extension("pub"))
        .map_err(|e| format!("{}.pub: {e}", key.display()))
}

/// The lab's podman network (made once, and only ever used by this stack directory) and its
/// IPv4 subnet.
async fn lab_network(
    podman: &Podman,
    stack: &Stack,
    owner: &str,
) -> Result<(String, String), String> {
    let network = network_name(&stack.name);
    if let Some(theirs) = network_owner(podman, &network).await? {
        check_owner(&format!("network {network}"), &theirs, owner)?;
    } else {
        let stack_label = format!("{STACK_LABEL}={}", stack.name);
        let dir_label = format!("{DIR_LABEL}={owner}");
        podman
            .run(&[
                "network",
                "create",
                "--label",
                &stack_label,
                "--label",
                &dir_label,
                &network,
            ])
            .await?;
    }
    let subnet = podman
        .run(&[
            "network",
            "inspect",
            "--format",
            "{{range .Subnets}}{{.Subnet}} {{end}}",
            &network,
        ])
        .await?
        .split_whitespace()
        .find(|s| s.contains('.'))
        .map(str::to_string)
        .ok_or_else(|| format!("podman network {network} has no IPv4 subnet"))?;
    Ok((network, subnet))
}

/// The overlay with an address for each selected host: addresses an earlier `up` gave stay.
fn lab_addresses(
    stack: &Stack,
    selected: &[String],
    network: &str,
    subnet: &str,
) -> Result<LabOverlay, String> {
    let previous = LabOverlay::load(&stack.dir)
        .ok()
        .filter(|o| o.subnet == subnet);
    let mut overlay = previous.unwrap_or(LabOverlay {
        stack: stack.name.clone(),
        network: network.to_string(),
        subnet: subnet.to_string(),
        hosts: BTreeMap::new(),
    });
    for name in selected {
        if !overlay.hosts.contains_key(name) {
            let address = free_address(subnet, &overlay)?;
            overlay.hosts.insert(
                name.clone(),
                LabHost {
                    container: container_name(&stack.name, name),
                    address,
                },
            );
        }
    }
    Ok(overlay)
}

/// Writes the lab's known_hosts: the keys the started hosts presented, and those recorded by an
/// earlier `up` for the others.
fn record_keys(stack: &Stack, keys: &BTreeMap<String, (String, String)>) -> Result<(), String> {
    let known = LabOverlay::known_hosts_path(&stack.dir);
    let mut lines: BTreeMap<String, String> = std::fs::read_to_string(&known)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let addr = l.split_whitespace().next()?;
            Some((addr.to_string(), l.to_string()))
        })
        .collect();
    for (address, key) in keys.values() {
        lines.insert(address.clone(), format!("{address} {key}"));
    }
    let text: String = lines.values().map(|l| format!("{l}\n")).collect();
    kz_engine::ops::write_text_atomically(&known, &text)
}

struct ContainerSpec {
    stack: String,
    /// The stack directory the lab belongs to (`DIR_LABEL`).
    owner: String,
    host: String,
    network: String,
    public_key: String,
    /// Runs containers of its own: privileged, with its own container storage and the lab image
    /// (`base_image`, an archive on this machine) loaded as `debian:12`.
    privileged: bool,
    base_image: Option<String>,
    /// Boots systemd (`[lab] init = "systemd"`), with Docker installed.
    systemd: bool,
    /// The host's `container_runtime` is docker.
    docker: bool,
}

/// Starts (or restarts) one lab host and returns its ed25519 public host key, `TYPE BASE64`.
async fn start_host(
    podman: &Podman,
    spec: &ContainerSpec,
    lab: &LabHost,
) -> Result<String, String> {
    let c = lab.container.as_str();
    if podman.succeeds(&["container", "exists", c]).await {
        let format = format!(
            "{}|{{{{.State.Status}}}}|{{{{.HostConfig.Privileged}}}}|{{{{range $k, $v := .NetworkSettings.Networks}}}}{{{{$k}}}} {{{{end}}}}|{{{{.ImageName}}}}",
            label_format(DIR_LABEL)
        );
        let info = podman.run(&["inspect", "--format", &format, c]).await?;
        let mut fields = info.split('|');
        let (theirs, state, privileged, networks, booted_systemd) = (
            fields.next().unwrap_or(""),
            fields.next().unwrap_or(""),
            fields.next().unwrap_or("") == "true",
            fields.next().unwrap_or(""),
            fields.next().unwrap_or("").contains(systemd::IMAGE),
        );
        check_owner(&format!("container {c}"), theirs, &spec.owner)?;
        if spec.systemd != booted_systemd {
            return Err(format!(
                "lab host {} was made before [lab] init changed: remove the lab (kz lab down) and make it again",
                spec.host
            ));
        }
        if spec.privileged && !privileged {
            return Err(format!(
                "lab host {} exists without --privileged: remove the lab (kz lab down) and make it again",
                spec.host
            ));
        }
        match state {
            "running" => {}
            "paused" => {
                podman.run(&["unpause", c]).await?;
            }
            _ => {
                podman.run(&["start", c]).await?;
            }
        }
        // A host cut off by `kz lab cut` comes back at its address.
        if !networks.split_whitespace().any(|n| n == spec.network) {
            podman
                .run(&["network", "connect", "--ip", &lab.address, &spec.network, c])
                .await?;
        }
    } else {
        let stack_label = format!("{STACK_LABEL}={}", spec.stack);
        let dir_label = format!("{DIR_LABEL}={}", spec.owner);
        let host_label = format!("io.kz.lab.host={}", spec.host);
        let mount = format!("{}:/root/.ssh/authorized_keys:ro", spec.public_key);
        let mut args = vec![
            "run",
            "-d",
            "--name",
            c,
            "--hostname",
            &spec.host,
            "--network",
            &spec.network,
            "--ip",
            &lab.address,
            "--cap-add",
            "NET_ADMIN",
            "--label",
            &stack_label,
            "--label",
            &dir_label,
            "--label",
            &host_label,
            "-v",
            &mount,
        ];
        let base_mount = spec
            .base_image
            .as_ref()
            .map(|b| format!("{b}:{}:ro", nested::NESTED_BASE));
        if spec.systemd {
            // Docker is installed and starts at boot on every systemd host, as on the real
            // servers: its storage is always on a volume; podman's too when it runs containers.
            args.extend(systemd::RUN_FLAGS);
            args.extend(["-v", nested::storage(true)]);
            if spec.base_image.is_some() && !spec.docker {
                args.extend(["-v", nested::storage(false)]);
            }
        } else if spec.privileged {
            args.extend(["--privileged", "-v", nested::storage(false)]);
        }
        if let Some(m) = base_mount.as_ref().filter(|_| spec.privileged) {
            args.extend(["-v", m.as_str()]);
        }
        if spec.systemd {
            args.extend([systemd::IMAGE, "/usr/local/sbin/kz-lab-init"]);
        } else {
            args.push(image::IMAGE);
        }
        if let Err(e) = podman.run(&args).await {
            // A container that could not start would be found, and fail, by every later `up`.
            let _ = podman.run(&["rm", "-f", "-v", "-t", "0", c]).await;
            return Err(e);
        }
    }
    let deadline = Instant::now() + BOOT_TIMEOUT;
    let key = loop {
        match podman
            .run(&["exec", c, "cat", "/etc/ssh/ssh_host_ed25519_key.pub"])
            .await
        {
            Ok(k) if k.starts_with("ssh-ed25519 ") => break k,
            _ if Instant::now() > deadline => {
                return Err(format!("no SSH host key after {}s", BOOT_TIMEOUT.as_secs()));
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    wait_for_ssh(&lab.address).await?;
    if spec.privileged && spec.base_image.is_some() {
        nested::load_base_image(podman, c, spec.docker && spec.systemd).await?;
    }
    // `TYPE BASE64`, without the comment (root@host), as known_hosts wants.
    Ok(key.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
}

/// Waits until `address:22` accepts connections.
pub async fn wait_for_ssh(address: &str) -> Result<(), String> {
    let deadline = Instant::now() + BOOT_TIMEOUT;
    loop {
        let attempt = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect((address, 22)),
        )
        .await;
        if matches!(attempt, Ok(Ok(_))) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{address}:22 did not answer within {}s",
                BOOT_TIMEOUT.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The first address of `subnet` from .10 on that no lab host has.
fn free_address(subnet: &str, overlay: &LabOverlay) -> Result<String, String> {
    let cidr = Cidr::parse(subnet).ok_or_else(|| format!("cannot read subnet {subnet}"))?;
    for offset in 10..cidr.size().saturating_sub(1) {
        let Some(candidate) = cidr.nth(offset).map(|a| a.to_string()) else {
            break;
        };
        if !overlay.hosts.values().any(|h| h.address == candidate) {
            return Ok(candidate);
        }
    }
    Err(format!("no free address left in {subnet}"))
}

/// Removes every container and the network of the lab of `stack` made from `dir`; returns how
/// many hosts. The lab of a stack of the same name in another directory is left alone.
pub async fn down(podman: &Podman, stack: &str, dir: &Path) -> Result<(usize, bool), String> {
    let owner = lab_owner(dir);
    let by_stack = format!("label={STACK_LABEL}={stack}");
    let by_dir = format!("label={DIR_LABEL}={owner}");
    let names = podman
        .run(&[
            "ps",
            "-a",
            "--filter",
            &by_stack,
            "--filter",
            &by_dir,
            "--format",
            "{{.Names}}",
        ])
        .await?;
    let names: Vec<&str> = names.lines().filter(|l| !l.is_empty()).collect();
    if !names.is_empty() {
        // `-v`: the nested hosts' container storage goes with them.
        let mut args = vec!["rm", "-f", "-v", "-t", "0"];
        args.extend(names.iter().copied());
        podman.run(&args).await?;
    }
    let network = network_name(stack);
    if let Some(theirs) = network_owner(podman, &network).await?
        && check_owner(&format!("network {network}"), &theirs, &owner).is_ok()
    {
        podman.run(&["network", "rm", "-f", &network]).await?;
        return Ok((names.len(), true));
    }
    Ok((names.len(), false))
}

/// The label naming the stack directory a lab belongs to: two checkouts of one stack share its
/// name, never their lab.
pub const DIR_LABEL: &str = "io.kz.lab.dir";

/// The canonical stack directory, as the lab's owner.
pub fn lab_owner(dir: &Path) -> String {
    std::fs::canonicalize(dir)
        .unwrap_or_else(|_| dir.to_path_buf())
        .display()
        .to_string()
}

/// The stack directory a lab network belongs to, or `None` when there is no such network.
async fn network_owner(podman: &Podman, network: &str) -> Result<Option<String>, String> {
    if !podman.succeeds(&["network", "exists", network]).await {
        return Ok(None);
    }
    let format = label_format(DIR_LABEL);
    podman
        .run(&["network", "inspect", "--format", &format, network])
        .await
        .map(Some)
}

/// A podman `--format` template printing one label's value.
fn label_format(label: &str) -> String {
    format!("{{{{index .Labels \"{label}\"}}}}")
}

/// Refuses to adopt what another stack directory's lab made.
fn check_owner(what: &str, theirs: &str, ours: &str) -> Result<(), String> {
    let theirs = theirs.trim();
    if theirs == ours {
        return Ok(());
    }
    Err(format!(
        "{what} belongs to the lab of another directory ({}): take that lab down there first (kz lab down DIR)",
        if theirs.is_empty() || theirs == "<no value>" {
            "unknown"
        } else {
            theirs
        }
    ))
}

/// Each lab host's state: running, paused, exited, cut (running but off the lab network), missing.
pub async fn states(podman: &Podman, overlay: &LabOverlay) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, h) in &overlay.hosts {
        let state = match podman
            .run(&[
                "inspect",
                "--format",
                "{{.State.Status}} {{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
                &h.container,
            ])
            .await
        {
            Err(_) => "missing".to_string(),
            Ok(s) => {
                let mut words = s.split_whitespace();
                let status = words.next().unwrap_or("unknown").to_string();
                let connected = words.any(|n| n == overlay.network);
                if status == "running" && !connected {
                    "cut".to_string()
                } else {
                    status
                }
            }
        };
        out.push((name.clone(), state));
    }
    out
}

/// Loads an image tarball into a lab host's own podman; returns what it loaded.
pub async fn load_image(podman: &Podman, container: &str, tar: &Path) -> Result<String, String> {
    let inside = "/var/tmp/kz-load-image.tar";
    let src = tar.display().to_string();
    let dest = format!("{container}:{inside}");
    podman
        .run_with(&["cp", &src, &dest], None, Duration::from_secs(600))
        .await?;
    let loaded = podman
        .run_with(
            &["exec", container, "podman", "load", "-q", "-i", inside],
            None,
            Duration::from_secs(600),
        )
        .await;
    let _ = podman.run(&["exec", container, "rm", "-f", inside]).await;
    loaded.map(|s| s.replace('\n', ", "))
}

fn create_private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))
}
