//! Lab hosts that run containers of their own (nested podman or Docker): the lab image, saved
//! on this machine, is loaded into their runtime as `debian:12`, so stacks build `FROM
//! debian:12` with Debian's packages and no registry.

use std::time::{Duration, Instant};

use super::image;
use super::podman::Podman;

/// Where a nested lab host finds the saved lab image.
pub const NESTED_BASE: &str = "/var/lib/kz-lab/debian-12.tar";

/// The container storage a host's runtime keeps on a volume of its own: overlay cannot stack on
/// the machine's overlay.
pub fn storage(docker: bool) -> &'static str {
    if docker {
        "/var/lib/docker"
    } else {
        "/var/lib/containers"
    }
}

/// Makes the lab image `debian:12` in a lab host's own runtime (once).
pub async fn load_base_image(podman: &Podman, container: &str, docker: bool) -> Result<(), String> {
    let tool = if docker { "docker" } else { "podman" };
    if docker {
        wait_for_docker(podman, container).await?;
    }
    // podman saved the image under its full name, `localhost/kz-debian:12`; both runtimes load it
    // under that name.
    let exists = if docker {
        "docker image inspect debian:12 >/dev/null 2>&1"
    } else {
        "podman image exists debian:12"
    };
    let script = format!(
        "{exists} || {{ {tool} load -q -i {NESTED_BASE} >/dev/null && {tool} tag localhost/{} debian:12; }}",
        image::IMAGE
    );
    podman
        .run_with(
            &["exec", container, "sh", "-c", &script],
            None,
            Duration::from_secs(300),
        )
        .await
        .map(|_| ())
        .map_err(|e| format!("cannot make debian:12 in the lab host's {tool}: {e}"))
}

/// How long dockerd has to come up after a systemd host boots.
const DOCKER_TIMEOUT: Duration = Duration::from_secs(90);

/// Waits until the host's dockerd is active (it starts after boot, on its volume).
pub async fn wait_for_docker(podman: &Podman, container: &str) -> Result<(), String> {
    let deadline = Instant::now() + DOCKER_TIMEOUT;
    loop {
        let state = podman
            .run(&["exec", container, "systemctl", "is-active", "docker"])
            .await
            .unwrap_or_else(|e| e);
        if state == "active" {
            return Ok(());
        }
        // `failed` is final (a unit about to restart shows `activating`): say why at once rather
        // than wait out the deadline.
        if state == "failed" {
            let log = podman
                .run(&[
                    "exec",
                    container,
                    "journalctl",
                    "-u",
                    "docker",
                    "-n",
                    "5",
                    "--no-pager",
                    "-q",
                ])
                .await
                .unwrap_or_else(|e| e);
            return Err(format!(
                "docker.service failed on the lab host; its last lines:\n{}",
                log.trim()
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "docker.service is not active after {}s ({})",
                DOCKER_TIMEOUT.as_secs(),
                state.lines().last().unwrap_or("")
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
