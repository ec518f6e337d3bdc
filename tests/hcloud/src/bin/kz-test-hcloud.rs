//! Runs the fake Hetzner Cloud API until killed, for trying kz against it by hand or from a
//! script. Prints `KZ_HCLOUD_ENDPOINT=<url>` and `HCLOUD_TOKEN=<token>` on stdout once serving.
//!
//! ```text
//! kz-test-hcloud [--keybuzz] [--network NAME=CIDR]... [--server NAME[=IP][,KEY=VALUE]...]...
//!                [--servers PREFIX:N]
//! ```
//! A server with an IP is attached to the (first) seeded network whose range holds it.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::ExitCode;

use kz_test_hcloud::FakeHcloud;

const USAGE: &str = "usage: kz-test-hcloud [--keybuzz] [--network NAME=CIDR]... \
                     [--server NAME[=IP][,KEY=VALUE]...]... [--servers PREFIX:N]";

fn main() -> ExitCode {
    let api = FakeHcloud::start();
    let mut networks: Vec<(String, String)> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let result = match arg.as_str() {
            "--keybuzz" => {
                api.seed_keybuzz();
                networks.push(("keybuzz-private".into(), "10.0.0.0/16".into()));
                Ok(())
            }
            "--network" => args
                .next()
                .ok_or("--network needs NAME=CIDR".to_owned())
                .and_then(|v| network(&api, &mut networks, &v)),
            "--server" => args
                .next()
                .ok_or("--server needs NAME[=IP][,KEY=VALUE]...".to_owned())
                .and_then(|v| server(&api, &networks, &v)),
            "--servers" => args
                .next()
                .ok_or("--servers needs PREFIX:N".to_owned())
                .and_then(|v| servers(&api, &v)),
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => Err(format!("unknown argument {other:?}")),
        };
        if let Err(e) = result {
            eprintln!("kz-test-hcloud: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    println!("KZ_HCLOUD_ENDPOINT={}", api.url());
    println!("HCLOUD_TOKEN={}", api.token());
    let _ = std::io::stdout().flush();
    // Serve until killed; the server runs on its own thread.
    loop {
        std::thread::park();
    }
}

fn network(api: &FakeHcloud, networks: &mut Vec<(String, String)>, v: &str) -> Result<(), String> {
    let (name, cidr) = v
        .split_once('=')
        .ok_or_else(|| format!("--network {v:?}: expected NAME=CIDR"))?;
    let (ip, len) = cidr
        .split_once('/')
        .ok_or_else(|| format!("--network {v:?}: expected a CIDR range"))?;
    if ip.parse::<Ipv4Addr>().is_err() || len.parse::<u8>().map_or(true, |l| l > 32) {
        return Err(format!("--network {v:?}: expected a CIDR range"));
    }
    api.add_network(name, cidr);
    networks.push((name.to_owned(), cidr.to_owned()));
    Ok(())
}

fn server(api: &FakeHcloud, networks: &[(String, String)], v: &str) -> Result<(), String> {
    let mut parts = v.split(',');
    let head = parts.next().unwrap_or_default();
    let labels: Vec<(&str, &str)> = parts
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect();
    let (name, ip) = match head.split_once('=') {
        Some((name, ip)) => (name, Some(ip)),
        None => (head, None),
    };
    let private_ip = match ip {
        None => None,
        Some(ip) => {
            let addr: Ipv4Addr = ip
                .parse()
                .map_err(|_| format!("--server {v:?}: {ip:?} is not an IPv4 address"))?;
            let (network, _) = networks
                .iter()
                .find(|(_, cidr)| contains(cidr, addr))
                .ok_or_else(|| format!("--server {v:?}: no --network holds {ip}"))?;
            Some((network.as_str(), ip))
        }
    };
    api.add_server(name, &labels, private_ip);
    Ok(())
}

fn servers(api: &FakeHcloud, v: &str) -> Result<(), String> {
    let (prefix, n) = v
        .split_once(':')
        .and_then(|(p, n)| n.parse::<usize>().ok().map(|n| (p, n)))
        .ok_or_else(|| format!("--servers {v:?}: expected PREFIX:N"))?;
    api.add_servers(prefix, n);
    Ok(())
}

fn contains(cidr: &str, ip: Ipv4Addr) -> bool {
    let Some((base, len)) = cidr.split_once('/') else {
        return false;
    };
    let (Ok(base), Ok(len)) = (base.parse::<Ipv4Addr>(), len.parse::<u32>()) else {
        return false;
    };
    let mask = if len == 0 {
        0
    } else {
        u32::MAX << (32 - len.min(32))
    };
    u32::from(base) & mask == u32::from(ip) & mask
}
