//! Lab hosts that boot systemd and run Docker (`[lab] init = "systemd"`), so a stack written for
//! real servers (units, `systemctl`, `docker`) runs in the lab unchanged. Their image,
//! `kz-debian-systemd:12`, is built from the base image with podman build, only when a stack
//! asks for it.

use std::time::Duration;

use super::image::{self, RemoveOnDrop, cache_dir};
use super::podman::Podman;

pub const IMAGE: &str = "kz-debian-systemd:12";

/// Bumped when the Containerfile's content changes, so an old cached image is rebuilt; the base
/// image's version is part of the label too, since this image is built on it.
const VERSION: &str = "2";
const VERSION_LABEL: &str = "io.kz.lab.systemd-version";

fn version() -> String {
    format!("{}.{VERSION}", image::IMAGE_VERSION)
}

/// The image: systemd, dbus and Docker as on a real server. The services the base image
/// preinstalls for stacks/lab (Redis, Sentinel, HAProxy) are purged, so the stack installs them
/// from Debian's packages as on a real server and nothing holds their ports at boot. Units that
/// would touch the machine's kernel (a privileged container's /proc/sys is the machine's) or
/// fail without hardware are masked; apt's timers are masked so that no background apt run holds
/// dpkg's lock while a plan is applied.
const CONTAINERFILE: &str = r#"FROM localhost/kz-debian:12
RUN export DEBIAN_FRONTEND=noninteractive \
 && apt-get update \
 && apt-get install -y --no-install-recommends systemd systemd-sysv dbus docker.io \
 && apt-get purge -y redis-server redis-sentinel haproxy \
 && apt-get autoremove -y \
 && apt-get clean
COPY kz-hostkeys.service /etc/systemd/system/kz-hostkeys.service
COPY kz-lab-init /usr/local/sbin/kz-lab-init
RUN systemctl enable kz-hostkeys.service docker.service ssh.service \
 && systemctl mask systemd-sysctl.service systemd-modules-load.service \
    systemd-binfmt.service proc-sys-fs-binfmt_misc.automount \
    systemd-udevd.service systemd-udev-trigger.service systemd-remount-fs.service \
    getty@tty1.service console-getty.service serial-getty@.service getty.target \
    podman-restart.service podman-auto-update.service podman-auto-update.timer \
    apt-daily.timer apt-daily-upgrade.timer \
 && rm -f /etc/machine-id /var/lib/dbus/machine-id && touch /etc/machine-id
STOPSIGNAL SIGRTMIN+3
CMD ["/usr/local/sbin/kz-lab-init"]
"#;

/// The host's first process. systemd itself (not a unit) raises fs.file-max and fs.nr_open at
/// every boot, and a privileged container's /proc/sys is the machine's: the parts of /proc/sys
/// that are not per container (fs, kernel, vm) are made read-only before systemd starts. net
/// stays writable: it belongs to the host's own network namespace, and Docker needs it.
const INIT: &str = "#!/bin/sh\n\
    for d in fs kernel vm; do\n\
    \x20 mount --bind /proc/sys/$d /proc/sys/$d && mount -o remount,bind,ro /proc/sys/$d || exit 1\n\
    done\n\
    exec /sbin/init\n";

/// Each lab host makes its own host keys on its first boot (the image has none), before sshd.
const HOSTKEYS_UNIT: &str = "[Unit]\n\
    Description=kz lab: this host's own SSH host keys, made on first boot\n\
    Before=ssh.service\n\
    \n\
    [Service]\n\
    Type=oneshot\n\
    ExecStart=/usr/bin/ssh-keygen -A\n\
    RemainAfterExit=yes\n\
    \n\
    [Install]\n\
    WantedBy=multi-user.target\n";

/// Whether the systemd image is present and current.
pub async fn present(podman: &Podman) -> bool {
    image::has_version(podman, IMAGE, VERSION_LABEL, &version()).await
}

/// Builds the systemd image from the base image (which must be present); apt reaches the
/// machine's Debian mirror, as the base image's sources say. `--pull=never`: the base is local
/// and no registry is ever asked.
pub async fn build(podman: &Podman, progress: &dyn Fn(&str)) -> Result<(), String> {
    let dir = cache_dir().join(format!("build-systemd-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(dir.clone());
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let write = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text).map_err(|e| format!("{}: {e}", dir.display()))
    };
    write("Containerfile", CONTAINERFILE)?;
    write("kz-hostkeys.service", HOSTKEYS_UNIT)?;
    write("kz-lab-init", INIT)?;
    std::fs::set_permissions(
        dir.join("kz-lab-init"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .map_err(|e| format!("{}: {e}", dir.display()))?;
    progress(&format!(
        "building {IMAGE} from {} (once; about a minute)",
        image::IMAGE
    ));
    let dir_s = dir.display().to_string();
    let label = format!("{VERSION_LABEL}={}", version());
    podman
        .run_with(
            &[
                "build",
                "--pull=never",
                "--label",
                &label,
                "-t",
                IMAGE,
                &dir_s,
            ],
            None,
            Duration::from_secs(900),
        )
        .await
        .map(|_| ())
        .map_err(|e| format!("cannot build {IMAGE}: {e}"))
}

/// The `podman run` flags of a systemd host: systemd as PID 1 in a privileged container with its
/// own /run and /tmp, stopped by the signal systemd shuts down on. `--systemd=false` because
/// podman's own systemd mode mounts the cgroup tree in a way nested Docker cannot create
/// containers under; `container=podman` tells systemd it runs in a container.
pub const RUN_FLAGS: &[&str] = &[
    "--privileged",
    "--systemd=false",
    "--tmpfs",
    "/run",
    "--tmpfs",
    "/run/lock",
    "--tmpfs",
    "/tmp",
    "-e",
    "container=podman",
    "--stop-signal",
    "RTMIN+3",
];

#[cfg(test)]
mod tests {
    use super::*;

    /// A privileged container shares the machine's kernel: the units that write to it at boot
    /// must stay masked, and podman's systemd mode must stay off (nested Docker fails under it).
    #[test]
    fn units_that_touch_the_machine_kernel_are_masked() {
        let masks = CONTAINERFILE
            .split("systemctl mask")
            .nth(1)
            .expect("a mask line");
        for unit in [
            "systemd-sysctl.service",
            "systemd-modules-load.service",
            "systemd-binfmt.service",
        ] {
            assert!(masks.contains(unit), "{unit} is not masked");
        }
        assert!(RUN_FLAGS.contains(&"--systemd=false"));
        assert!(CONTAINERFILE.contains("apt-get purge -y redis-server redis-sentinel haproxy"));
    }
}
