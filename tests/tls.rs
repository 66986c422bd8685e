//! TLS end to end, with the shop binary and throw-away certificates (rcgen): HTTPS on
//! the public port (`[server.tls]`), and a three-node cluster whose nodes talk over
//! mutual TLS on listeners of their own (`[cluster] listen`, `[cluster.tls]`), which a
//! node whose certificate another CA signed cannot join. Every process is stopped at the
//! end; every wait is bounded.

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{json, Value};
use support::cluster::{free_ports, start_on};
use support::*;

const GEN: &str = env!("CARGO_BIN_EXE_lithair-gen");

fn shop() -> &'static Example {
    static SHOP: OnceLock<Example> = OnceLock::new();
    SHOP.get_or_init(|| Example::build(GEN, "shop", &[("admin", &["admin"])]))
}

/// A certificate authority of the test.
struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("CA certificate");
        Ca { cert, key }
    }

    /// Writes the CA's certificate to `path`.
    fn save(&self, path: PathBuf) -> PathBuf {
        std::fs::write(&path, self.cert.pem()).expect("write CA");
        path
    }

    /// Writes a certificate for 127.0.0.1 (server and client use) and its key into
    /// `dir` as `<name>.pem` and `<name>.key`, and the CA as `<name>-ca.pem`.
    fn issue(&self, dir: &Path, name: &str) -> Files {
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .expect("params");
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("certificate");
        let files = Files {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
            ca: dir.join(format!("{name}-ca.pem")),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write cert");
        std::fs::write(&files.key, key.serialize_pem()).expect("write key");
        std::fs::write(&files.ca, self.cert.pem()).expect("write CA");
        files
    }
}

/// A certificate, its key and the CA that signed it, on disk.
#[derive(Clone)]
struct Files {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

/// The shop's `lithair.toml` with `extra` appended, written as `name` in `dir`.
fn config(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let base = std::fs::read_to_string(shop().dir.join("lithair.toml")).expect("lithair.toml");
    let path = dir.join(name);
    std::fs::write(&path, format!("{base}\n{extra}\n")).expect("write config");
    path
}

/// A TLS client that trusts the CA of `trust` and, with `identity`, shows that
/// certificate.
fn client(trust: &Path, identity: Option<&Files>) -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(trust).expect("CA file") {
        roots.add(c.expect("CA")).expect("CA added");
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(f) => {
            let chain = CertificateDer::pem_file_iter(&f.cert)
                .expect("cert file")
                .collect::<Result<Vec<_>, _>>()
                .expect("certs");
            let key = PrivateKeyDer::from_pem_file(&f.key).expect("key file");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client certificate")
        }
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// `GET path` over TLS through `tls` to `addr` (with the cluster secret header when
/// `secret`); the status and JSON body, or why there was none.
async fn get_tls(
    tls: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, Value), String> {
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let name = ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
        let stream = tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| format!("HTTP handshake: {e}"))?;
        tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .uri(path)
            .header("host", addr.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .map_err(|_| "no answer within 10 s".to_string())?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_port_serves_https_with_the_configured_certificate() {
    let s = shop();
    let tmp = tempfile::tempdir().expect("temp dir");
    let ca = Ca::new("test CA");
    let files = ca.issue(tmp.path(), "server");
    let cfg = config(
        tmp.path(),
        "tls.toml",
        &format!(
            "[server.tls]\ncert_file = {:?}\nkey_file = {:?}\n",
            files.cert, files.key
        ),
    );
    let cfg_arg = cfg.to_string_lossy().to_string();
    let data = tmp.path().join("data");
    let (bin, dir) = (s.bin.clone(), s.dir.clone());
    let mut server = tokio::task::spawn_blocking(move || {
        Server::start_with(&bin, &dir, &data, &[], &["--config", &cfg_arg])
    })
    .await
    .expect("start");
    let trusted = client(&files.ca, None);
    let (status, body) = get_tls(&trusted, server.addr, "/health", &[])
        .await
        .expect("HTTPS answer");
    assert_eq!((status, body), (200, json!({"status": "ok"})));
    let token = format!("Bearer {}", s.token("admin"));
    let (status, body) = get_tls(
        &trusted,
        server.addr,
        "/api/categories",
        &[("authorization", &token)],
    )
    .await
    .expect("HTTPS answer");
    assert_eq!(status, 200, "{body}");
    // A client that does not trust the CA gets no answer; neither does plain HTTP.
    let stranger = client(
        &Ca::new("another CA").save(tmp.path().join("another-ca.pem")),
        None,
    );
    let refused = get_tls(&stranger, server.addr, "/health", &[]).await;
    assert!(
        refused.as_ref().is_err_and(|e| e.starts_with("TLS")),
        "{refused:?}"
    );
    let addr = server.addr;
    let plain =
        tokio::task::spawn_blocking(move || raw(addr, b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n"))
            .await
            .expect("plain request");
    assert_eq!(plain, 0, "plain HTTP got an HTTP answer from the TLS port");
    server.stop();
}

/// A node of the mutual-TLS cluster.
struct Node {
    id: u64,
    port: u16,
    cluster_port: u16,
    config: PathBuf,
    data: PathBuf,
    server: Option<Server>,
}

fn start(node: &Node, peers: &str) -> Server {
    let s = shop();
    start_on(
        &s.bin,
        &s.dir,
        &node.data,
        node.port,
        &[
            "--config",
            &node.config.to_string_lossy(),
            "--node-id",
            &node.id.to_string(),
            "--peers",
            peers,
        ],
    )
}

fn status(node: &Node) -> Option<Value> {
    let a = call(
        "GET",
        &format!("http://127.0.0.1:{}/_cluster/status", node.port),
        None,
        None,
        &[],
    );
    (a.status == 200).then_some(a.json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_talk_mutual_tls_on_their_cluster_listener_and_a_node_the_ca_did_not_sign_cannot_join(
) {
    let s = shop();
    let tmp = tempfile::tempdir().expect("temp dir");
    let ca = Ca::new("cluster CA");
    let rogue = Ca::new("rogue CA");
    let ports = free_ports(8);
    let ca_file = ca.save(tmp.path().join("cluster-ca.pem"));
    let mut nodes: Vec<Node> = (0..4)
        .map(|i| {
            let id = i as u64 + 1;
            let name = format!("node{id}");
            // Node 4's certificate comes from another CA; it trusts the cluster's.
            let mut files = if id == 4 {
                rogue.issue(tmp.path(), &name)
            } else {
                ca.issue(tmp.path(), &name)
            };
            files.ca = ca_file.clone();
            let extra = format!(
                "[cluster]\nlisten = \"127.0.0.1:{}\"\n[cluster.tls]\ncert_file = {:?}\nkey_file = {:?}\nca_file = {:?}\n",
                ports[4 + i], files.cert, files.key, files.ca
            );
            Node {
                id,
                port: ports[i],
                cluster_port: ports[4 + i],
                config: config(tmp.path(), &format!("{name}.toml"), &extra),
                data: tmp.path().join(format!("d{id}")),
                server: None,
            }
        })
        .collect();
    let peers: String = nodes[..3]
        .iter()
        .map(|n| format!("{}=127.0.0.1:{}", n.id, n.cluster_port))
        .collect::<Vec<_>>()
        .join(",");
    let nodes = tokio::task::spawn_blocking(move || {
        for n in nodes.iter_mut().take(3) {
            n.server = Some(start(n, &peers));
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while !nodes[..3]
            .iter()
            .all(|n| status(n).is_some_and(|s| s["leader"].is_u64()))
        {
            assert!(Instant::now() < deadline, "no leader over mutual TLS");
            std::thread::sleep(Duration::from_millis(100));
        }
        // Writes through every node replicate over the TLS links.
        for n in &nodes[..3] {
            let a = call(
                "POST",
                &format!("http://127.0.0.1:{}/api/categories", n.port),
                Some(s.token("admin")),
                Some(&json!({"name": format!("via-{}", n.id)})),
                &[],
            );
            assert_eq!(a.status, 201, "{}", a.text);
        }
        for n in &nodes[..3] {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let a = call(
                    "GET",
                    &format!("http://127.0.0.1:{}/api/categories", n.port),
                    None,
                    None,
                    &[],
                );
                if a.json["total"] == 3 {
                    break;
                }
                assert!(Instant::now() < deadline, "node {} has {}", n.id, a.text);
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        // Raft messages are not taken on the public port beside a cluster listener.
        let a = call(
            "POST",
            &format!("http://127.0.0.1:{}/_raft/vote", nodes[0].port),
            None,
            Some(&json!({})),
            &[("x-lithair-cluster-secret", support::cluster::SECRET)],
        );
        assert_eq!(a.status, 404, "{}", a.text);
        // Plain HTTP to a cluster listener gets no answer.
        let cluster_addr: SocketAddr = ([127, 0, 0, 1], nodes[0].cluster_port).into();
        assert_eq!(
            raw(cluster_addr, b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n"),
            0
        );
        nodes
    })
    .await
    .expect("the cluster");

    let cluster_addr: SocketAddr = ([127, 0, 0, 1], nodes[0].cluster_port).into();
    // Without a client certificate, the cluster listener answers nothing.
    let anonymous = client(&ca_file, None);
    let refused = get_tls(&anonymous, cluster_addr, "/_cluster/status", &[]).await;
    assert!(refused.is_err(), "{refused:?}");
    // Nor with one another CA signed.
    let intruder = client(&ca_file, Some(&rogue.issue(tmp.path(), "intruder")));
    let refused = get_tls(&intruder, cluster_addr, "/_cluster/status", &[]).await;
    assert!(refused.is_err(), "{refused:?}");
    // With one the CA signed, it answers (and serves only the cluster's routes).
    let member = ca.issue(tmp.path(), "member");
    let trusted = client(&ca_file, Some(&member));
    let (code, body) = get_tls(&trusted, cluster_addr, "/_cluster/status", &[])
        .await
        .expect("an answer over mutual TLS");
    assert_eq!(code, 200, "{body}");
    let (code, _) = get_tls(&trusted, cluster_addr, "/api/categories", &[])
        .await
        .expect("an answer over mutual TLS");
    assert_eq!(code, 404);

    // Node 4, whose certificate the rogue CA signed, is not added: the handshake with
    // it fails, and the members stay three.
    let mut nodes = tokio::task::spawn_blocking(move || {
        let mut nodes = nodes;
        let all = nodes
            .iter()
            .map(|n| format!("{}=127.0.0.1:{}", n.id, n.cluster_port))
            .collect::<Vec<_>>()
            .join(",");
        nodes[3].server = Some(start(&nodes[3], &all));
        let leader = status(&nodes[0])
            .and_then(|s| s["leader"].as_u64())
            .unwrap_or(1);
        let at = &nodes[leader as usize - 1];
        let a = call(
            "POST",
            &format!("http://127.0.0.1:{}/_cluster/members", at.port),
            Some(s.token("admin")),
            Some(&json!({"id": 4, "addr": format!("127.0.0.1:{}", nodes[3].cluster_port)})),
            &[],
        );
        assert_eq!(a.status, 502, "{}", a.text);
        assert!(a.text.contains("handshake"), "{}", a.text);
        let members = status(at).map(|s| s["members"].clone());
        assert_eq!(members, Some(json!([1, 2, 3])));
        nodes
    })
    .await
    .expect("the rogue node");
    for n in &mut nodes {
        if let Some(mut s) = n.server.take() {
            s.stop();
        }
    }
}
