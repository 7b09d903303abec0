//! `rediss://` as ElastiCache serves it (in-transit encryption): a real redis-server with TLS
//! on, a certificate from a throwaway CA that the client trusts through `SSL_CERT_FILE` (as
//! the system's roots are trusted on Lambda and Fargate), and our connection code on top.
//! One test in this file: it sets a process-wide environment variable.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use adapters::redis_conn::LazyRedis;

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run openssl");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for localhost / 127.0.0.1, signed by it.
fn make_certificates(dir: &Path) {
    let p = |name: &str| dir.join(name).display().to_string();
    run(Command::new("openssl").args([
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        &p("ca.key"),
        "-out",
        &p("ca.crt"),
    ]));
    run(Command::new("openssl").args([
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        &p("server.key"),
        "-out",
        &p("server.csr"),
    ]));
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("write san.ext");
    run(Command::new("openssl").args([
        "x509",
        "-req",
        "-in",
        &p("server.csr"),
        "-CA",
        &p("ca.crt"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &p("san.ext"),
        "-out",
        &p("server.crt"),
    ]));
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn start_tls_redis(dir: &Path) -> (Server, u16) {
    let port = free_port();
    let p = |name: &str| dir.join(name).display().to_string();
    let child = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            &p("server.crt"),
            "--tls-key-file",
            &p("server.key"),
            "--tls-ca-cert-file",
            &p("ca.crt"),
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &dir.display().to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server");
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "redis-server with TLS did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, port)
}

#[tokio::test]
async fn rediss_urls_connect_over_tls_and_plain_text_is_refused() {
    let dir = std::env::temp_dir().join(format!("redis-tls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    make_certificates(&dir);
    let (_server, port) = start_tls_redis(&dir);
    // rustls-native-certs reads the trusted roots from here.
    std::env::set_var("SSL_CERT_FILE", dir.join("ca.crt"));

    let tls = LazyRedis::new(
        &format!("rediss://localhost:{port}/"),
        Duration::from_secs(5),
    )
    .expect("parse rediss url");
    let mut conn = tls.conn().await.expect("TLS connection");
    let _: () = redis::cmd("SET")
        .arg("tls-check")
        .arg("0.00012345")
        .query_async(&mut conn)
        .await
        .expect("SET over TLS");
    let value: String = redis::cmd("GET")
        .arg("tls-check")
        .query_async(&mut conn)
        .await
        .expect("GET over TLS");
    assert_eq!(value, "0.00012345");

    // The same server without TLS: no answer a client could mistake for success.
    let plain = LazyRedis::new(
        &format!("redis://127.0.0.1:{port}/"),
        Duration::from_secs(2),
    )
    .expect("parse redis url");
    let refused = match plain.conn().await {
        Err(_) => true,
        Ok(mut c) => redis::cmd("PING")
            .query_async::<String>(&mut c)
            .await
            .is_err(),
    };
    assert!(refused, "a plain-text client talked to the TLS port");

    let _ = std::fs::remove_dir_all(&dir);
}
