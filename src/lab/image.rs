//! The lab's base image, `kz-debian:12`: Debian bookworm made by debootstrap from the machine's
//! own configured mirror (no registry is needed, and none is named here), imported into podman
//! once and reused by every lab.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::podman::{CONTAINERS_CONF, Podman};

pub const IMAGE: &str = "kz-debian:12";

/// Bumped when the image's content changes, so an old cached image is rebuilt.
pub const IMAGE_VERSION: &str = "1";
const VERSION_LABEL: &str = "io.kz.lab.image-version";

/// What every lab host has: sshd, the services KeyBuzz runs, UFW, and podman for nested containers.
const PACKAGES: &[&str] = &[
    "openssh-server",
    "redis-server",
    "redis-sentinel",
    "haproxy",
    "ufw",
    "iproute2",
    "procps",
    "python3",
    "podman",
    "runc",
    // debootstrap does not resolve virtual packages: podman's `container-network-stack`.
    "containernetworking-plugins",
    "ca-certificates",
];

/// The container's first process: fresh host keys on first start, then sshd in the foreground.
const INIT: &str = "#!/bin/sh\n\
    # kz lab host: host keys are made on the first start, so every lab host has its own.\n\
    mkdir -p /run/sshd\n\
    ssh-keygen -A >/dev/null\n\
    exec /usr/sbin/sshd -D -e\n";

const SSHD_CONF: &str = "# kz lab host: root by the lab key only.\n\
    PermitRootLogin prohibit-password\n\
    PasswordAuthentication no\n\
    KbdInteractiveAuthentication no\n\
    UseDNS no\n\
    MaxStartups 100:30:200\n\
    MaxSessions 64\n";

/// Where kz keeps machine-wide lab files: its containers.conf and image builds.
pub fn cache_dir() -> PathBuf {
    PathBuf::from("/var/cache/kz-lab")
}

/// Where the lab image, saved as an archive, waits to be loaded into lab hosts that run
/// containers: there it is also `debian:12`, so `FROM debian:12` builds with no registry.
pub fn saved_path() -> PathBuf {
    cache_dir().join(format!("kz-debian-12-v{IMAGE_VERSION}.tar"))
}

/// Saves the lab image as an archive once (`saved_path`), for nested podman to load.
pub async fn save(podman: &Podman) -> Result<PathBuf, String> {
    let path = saved_path();
    if path.is_file() {
        return Ok(path);
    }
    // Saved beside its final name, then renamed: an interrupted save is never taken for a whole one.
    let tmp = cache_dir().join(format!(".kz-debian-12.{}.tar", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let tmp_s = tmp.display().to_string();
    let saved = podman
        .run_with(
            &["save", "-q", "-o", &tmp_s, IMAGE],
            None,
            std::time::Duration::from_secs(600),
        )
        .await;
    if let Err(e) = saved {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("cannot save {IMAGE} for nested podman: {e}"));
    }
    std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// Whether the base image is present and current.
pub async fn present(podman: &Podman) -> bool {
    has_version(podman, IMAGE, VERSION_LABEL, IMAGE_VERSION).await
}

/// Whether image `image` is present with `version` in its label `label` (an image of an older
/// kz lacks it, or has another: it is rebuilt).
pub(crate) async fn has_version(podman: &Podman, image: &str, label: &str, version: &str) -> bool {
    podman
        .run(&[
            "image",
            "inspect",
            "--format",
            &format!("{{{{index .Labels \"{label}\"}}}}"),
            image,
        ])
        .await
        .is_ok_and(|v| v == version)
}

/// The mirror of the machine's Debian sources (deb822 `debian.sources`, else `sources.list`).
pub fn debian_mirror() -> Result<String, String> {
    let deb822 = Path::new("/etc/apt/sources.list.d/debian.sources");
    if let Ok(text) = std::fs::read_to_string(deb822)
        && let Some(m) = mirror_from_deb822(&text)
    {
        return Ok(m);
    }
    let list = Path::new("/etc/apt/sources.list");
    if let Ok(text) = std::fs::read_to_string(list)
        && let Some(m) = mirror_from_list(&text)
    {
        return Ok(m);
    }
    Err(format!(
        "no Debian mirror found in {} or {}: kz builds the lab image from the machine's own apt sources",
        deb822.display(),
        list.display()
    ))
}

/// The first URI of a stanza serving the `bookworm` suite.
fn mirror_from_deb822(text: &str) -> Option<String> {
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|r| r.strip_prefix(':'))
                    .map(str::trim)
            })
        };
        let suites = field("Suites").unwrap_or("");
        if suites.split_whitespace().any(|s| s == "bookworm")
            && let Some(uri) = field("URIs").and_then(|u| u.split_whitespace().next())
        {
            return Some(uri.to_string());
        }
    }
    None
}

fn mirror_from_list(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let words: Vec<&str> = l
            .split_whitespace()
            .filter(|w| !w.starts_with('['))
            .collect();
        match words[..] {
            ["deb", uri, "bookworm", ..] => Some(uri.to_string()),
            _ => None,
        }
    })
}

/// Builds and imports the image: debootstrap into a scratch directory, a few files of kz's own,
/// then `podman import`. `progress` hears each step.
pub async fn build(podman: &Podman, progress: &dyn Fn(&str)) -> Result<(), String> {
    let mirror = debian_mirror()?;
    let root = cache_dir().join(format!("build-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(root.clone());
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    progress(&format!(
        "building {IMAGE} with debootstrap from {mirror} (once; a few minutes)"
    ));
    let include = format!("--include={}", PACKAGES.join(","));
    let root_s = root.display().to_string();
    super::run_tool(
        "debootstrap",
        &["--variant=minbase", &include, "bookworm", &root_s, &mirror],
        Duration::from_secs(900),
    )
    .await?;
    customize(&root)?;
    progress(&format!("importing {IMAGE} into podman"));
    let tar = cache_dir().join(format!("build-{}.tar", std::process::id()));
    let _tar_cleanup = RemoveOnDrop(tar.clone());
    let tar_s = tar.display().to_string();
    super::run_tool(
        "tar",
        &["-C", &root_s, "-cf", &tar_s, "."],
        Duration::from_secs(300),
    )
    .await?;
    podman
        .run_with(
            &[
                "import",
                "--change",
                "CMD [\"/usr/local/sbin/kz-lab-init\"]",
                "--change",
                &format!("LABEL {VERSION_LABEL}={IMAGE_VERSION}"),
                &tar_s,
                IMAGE,
            ],
            None,
            Duration::from_secs(600),
        )
        .await?;
    Ok(())
}

/// kz's files in the image: no host keys (each host makes its own), sshd settings, the init
/// script, root's .ssh, and containers.conf for podman inside lab hosts.
fn customize(root: &Path) -> Result<(), String> {
    let write = |rel: &str, text: &str, mode: u32| -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        let p = root.join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("{}: {e}", p.display()))
    };
    let ssh = root.join("etc/ssh");
    if let Ok(entries) = std::fs::read_dir(&ssh) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with("ssh_host_") {
                std::fs::remove_file(e.path())
                    .map_err(|err| format!("{}: {err}", e.path().display()))?;
            }
        }
    }
    write("etc/ssh/sshd_config.d/kz-lab.conf", SSHD_CONF, 0o644)?;
    write("usr/local/sbin/kz-lab-init", INIT, 0o755)?;
    write("etc/containers/containers.conf", CONTAINERS_CONF, 0o644)?;
    let dot_ssh = root.join("root/.ssh");
    std::fs::create_dir_all(&dot_ssh).map_err(|e| format!("{}: {e}", dot_ssh.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dot_ssh, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("{}: {e}", dot_ssh.display()))?;
    }
    // The downloaded packages are not needed in the image.
    if let Ok(entries) = std::fs::read_dir(root.join("var/cache/apt/archives")) {
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "deb") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}

/// Removes a scratch path when the build ends, however it ends.
pub(super) struct RemoveOnDrop(pub(super) PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if !self.0.is_dir() {
            let _ = std::fs::remove_file(&self.0);
            return;
        }
        // An interrupted debootstrap can leave /proc, /sys or /dev/pts mounted in the chroot:
        // unmount them first, and delete nothing while anything is still mounted there.
        for m in mounts_under(&self.0).iter().rev() {
            let _ = std::process::Command::new("umount")
                .args(["-l", m])
                .status();
        }
        if mounts_under(&self.0).is_empty() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The mount points at or under `dir`, from /proc/self/mounts.
fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|m| *m == prefix || m.starts_with(&format!("{prefix}/")))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mirror_is_read_from_the_bookworm_stanza() {
        let text = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n\n\
                    Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n";
        assert_eq!(
            mirror_from_deb822(text).as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(
            mirror_from_list("# x\ndeb [arch=amd64] http://m.example/debian bookworm main\n")
                .as_deref(),
            Some("http://m.example/debian")
        );
        assert_eq!(
            mirror_from_deb822("Types: deb\nSuites: trixie\nURIs: x\n"),
            None
        );
    }
}
