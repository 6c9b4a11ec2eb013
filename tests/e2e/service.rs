//! `mesh-service` over HTTP on loopback: Hello, and what it refuses.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};

use mesh_e2e::TestEnv;

/// A running `mesh-service` on a free loopback port, killed on drop.
struct Service {
    child: Child,
    addr: String,
}

impl Service {
    fn start(env: &TestEnv) -> Service {
        let mut child = env
            .ours("mesh-service")
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mesh-service starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("a first line");
        let addr = line
            .trim()
            .strip_prefix("mesh-service listening on http://")
            .and_then(|rest| rest.strip_suffix("/.well-known/mmm/"))
            .unwrap_or_else(|| panic!("unexpected first line: {line}"))
            .to_owned();
        Service { child, addr }
    }

    /// Send one HTTP/1.1 request; return the status code and the body.
    fn call(&self, method: &str, path: &str, body: &[u8]) -> (u16, serde_json::Value) {
        let mut stream = TcpStream::connect(&self.addr).expect("connects");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.addr,
            body.len()
        );
        stream.write_all(head.as_bytes()).expect("sent");
        // The service may refuse before reading the whole of a large body.
        let _ = stream.write_all(body);
        let mut response = Vec::new();
        stream.read_to_end(&mut response).expect("an answer");
        let text = String::from_utf8(response).expect("utf-8");
        let (head, body) = text.split_once("\r\n\r\n").expect("a header and a body");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .expect("a status code");
        let json = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
        (status, json)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn hello_answers_with_the_protocol_version() {
    let env = TestEnv::new();
    let service = Service::start(&env);
    let (status, body) = service.call("POST", "/.well-known/mmm/", br#"{"Hello":{}}"#);
    assert_eq!(status, 200, "{body}");
    let hello = &body["MeshHelloResponse"];
    assert_eq!(hello["Status"], 201);
    assert_eq!(hello["Version"]["Major"], 3);
    assert_eq!(hello["Version"]["Minor"], 0);
}

#[test]
fn refusals_are_statuses_with_a_reason() {
    let env = TestEnv::new();
    let service = Service::start(&env);
    let cases: [(&str, &str, Vec<u8>, u16); 4] = [
        (
            "POST",
            "/.well-known/mmm/",
            br#"{"Exfiltrate":{}}"#.to_vec(),
            404,
        ),
        ("POST", "/.well-known/mmm/", b"{not json".to_vec(), 400),
        ("POST", "/.well-known/mmm/", vec![b' '; 65 * 1024], 413),
        ("POST", "/elsewhere", b"{}".to_vec(), 404),
    ];
    for (method, path, body, expected) in cases {
        let (status, json) = service.call(method, path, &body);
        assert_eq!(status, expected, "{method} {path}: {json}");
        let refusal = &json["MeshResponse"];
        assert_eq!(refusal["Status"], expected, "{json}");
        let reason = refusal["StatusDescription"].as_str().expect("a reason");
        assert!(
            !reason.contains("Exfiltrate"),
            "the input is not echoed: {reason}"
        );
    }
    // After all that the service still says Hello.
    let (status, _) = service.call("POST", "/.well-known/mmm/", br#"{"Hello":{}}"#);
    assert_eq!(status, 200);
}
