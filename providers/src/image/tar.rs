//! A build context as a ustar archive, byte for byte the same for the same files: entries
//! sorted, times, owners and modes fixed (only the executable bit kept), so that its digest
//! changes only when the context does.

/// One file of the context: its path relative to the context, whether it is executable, and
/// its bytes.
pub(crate) struct Entry {
    pub path: String,
    pub executable: bool,
    pub bytes: Vec<u8>,
}

fn octal(field: &mut [u8], n: u64) {
    let width = field.len() - 1;
    let s = format!("{n:0width$o}");
    field[..width].copy_from_slice(&s.as_bytes()[s.len() - width..]);
    field[width] = 0;
}

/// A header for `path`; a path longer than 100 bytes is split into ustar's prefix and name.
fn header(path: &str, size: u64, mode: u32) -> Result<[u8; 512], String> {
    let mut h = [0u8; 512];
    let (prefix, name) = if path.len() <= 100 {
        ("", path)
    } else {
        // Searched as bytes: `/` is ASCII, so where it is found is a character boundary, even
        // when byte 156 falls inside a multi-byte character.
        let cut = path.as_bytes()[..path.len().min(156)]
            .iter()
            .rposition(|&b| b == b'/')
            .filter(|i| path.len() - i - 1 <= 100)
            .ok_or_else(|| format!("path too long for the build context archive: {path}"))?;
        (&path[..cut], &path[cut + 1..])
    };
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 0);
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
    // The checksum is computed with its own field as spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|b| u64::from(*b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    Ok(h)
}

/// The archive of `entries` (sorted here by path).
pub(crate) fn archive(mut entries: Vec<Entry>) -> Result<Vec<u8>, String> {
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let mut out = Vec::new();
    for e in &entries {
        let mode = if e.executable { 0o755 } else { 0o644 };
        out.extend_from_slice(&header(&e.path, e.bytes.len() as u64, mode)?);
        out.extend_from_slice(&e.bytes);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_path_with_multibyte_characters_is_cut_at_a_slash_never_inside_one() {
        // Byte 156 falls inside `é` (two bytes): the cut is the last `/` before it, no panic.
        let path = format!(
            "{}/{}é{}/name.txt",
            "d".repeat(100),
            "x".repeat(54),
            "y".repeat(10)
        );
        assert!(!path.is_char_boundary(156));
        let h = header(&path, 0, 0o644).expect("a header");
        assert_eq!(&h[..3], b"xxx");
        let long = format!("{}é{}", "z".repeat(155), "w".repeat(200));
        assert!(header(&long, 0, 0o644).is_err());
    }

    #[test]
    fn archives_are_deterministic_and_tar_reads_them() {
        let make = || {
            vec![
                Entry {
                    path: "b/run.sh".into(),
                    executable: true,
                    bytes: b"echo hi\n".to_vec(),
                },
                Entry {
                    path: "Containerfile".into(),
                    executable: false,
                    bytes: b"FROM x\n".to_vec(),
                },
            ]
        };
        let a = archive(make()).expect("archive");
        let mut reversed = make();
        reversed.reverse();
        assert_eq!(a, archive(reversed).expect("archive"));
        assert_eq!(a.len() % 512, 0);
        let dir = tempfile::tempdir().expect("tempdir");
        let tar = dir.path().join("c.tar");
        std::fs::write(&tar, &a).expect("write");
        let st = std::process::Command::new("tar")
            .arg("-xf")
            .arg(&tar)
            .arg("-C")
            .arg(dir.path())
            .status()
            .expect("tar");
        assert!(st.success());
        assert_eq!(
            std::fs::read(dir.path().join("b/run.sh")).expect("read"),
            b"echo hi\n"
        );
    }
}
