//! The webhook ticket validator: access requests that carry a ticket id are
//! checked by POSTing `{"ticket_id", "requester", "account", "reason"}` to the
//! configured URL (`[vault] ticket_webhook_url`); a 2xx answer with
//! `{"valid": true}` accepts the ticket, `{"valid": false}` refuses it, and
//! anything else (unreachable, other status, other body) is an error that
//! refuses the request too.

use std::time::Duration;

use futures_util::future::BoxFuture;
use postern_vault::{TicketCheck, TicketValidator};

/// POSTs the ticket to a URL.
#[derive(Debug, Clone)]
pub struct WebhookValidator {
    url: String,
    client: reqwest::Client,
}

impl WebhookValidator {
    /// A validator for `url` with a 10 s timeout.
    pub fn new(url: &str) -> Result<Self, reqwest::Error> {
        Ok(WebhookValidator {
            url: url.to_owned(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
        })
    }
}

#[derive(serde::Deserialize)]
struct Verdict {
    valid: bool,
}

impl TicketValidator for WebhookValidator {
    fn validate<'a>(&'a self, ticket: &'a TicketCheck) -> BoxFuture<'a, Result<bool, String>> {
        Box::pin(async move {
            let resp = self.client.post(&self.url).json(ticket).send().await.map_err(|e| {
                if e.is_timeout() {
                    "the ticket webhook did not answer in time".to_string()
                } else {
                    "the ticket webhook could not be reached".to_string()
                }
            })?;
            let status = resp.status();
            if !status.is_success() {
                return Err(format!("the ticket webhook answered {status}"));
            }
            let v: Verdict = resp
                .json()
                .await
                .map_err(|_| "the ticket webhook did not answer {\"valid\": true|false}".to_string())?;
            Ok(v.valid)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A tiny HTTP server on 127.0.0.1:0 answering each request with the
    /// verdict for the ticket it names (`T-OK` valid, `T-NO` invalid,
    /// `T-500` a server error, `T-JUNK` not JSON).
    async fn webhook() -> (String, tokio::task::JoinHandle<Vec<String>>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/check", l.local_addr().unwrap());
        let h = tokio::spawn(async move {
            let mut bodies = Vec::new();
            for _ in 0..4 {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let body = loop {
                    let n = s.read(&mut chunk).await.unwrap();
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap())
                            })
                            .unwrap_or(0);
                        if body.len() >= len {
                            break body.to_owned();
                        }
                    }
                    if n == 0 {
                        break String::new();
                    }
                };
                let (status, out) = if body.contains("T-OK") {
                    ("200 OK", "{\"valid\": true}")
                } else if body.contains("T-NO") {
                    ("200 OK", "{\"valid\": false}")
                } else if body.contains("T-500") {
                    ("500 Internal Server Error", "{}")
                } else {
                    ("200 OK", "not json")
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{out}",
                    out.len()
                );
                s.write_all(resp.as_bytes()).await.unwrap();
                bodies.push(body);
            }
            bodies
        });
        (url, h)
    }

    #[tokio::test]
    async fn webhook_verdicts() {
        let (url, server) = webhook().await;
        let v = WebhookValidator::new(&url).unwrap();
        let check = |t: &str| TicketCheck {
            ticket_id: t.into(),
            requester: "bob".into(),
            account: "root@db1".into(),
            reason: "patching".into(),
        };
        assert_eq!(v.validate(&check("T-OK")).await, Ok(true));
        assert_eq!(v.validate(&check("T-NO")).await, Ok(false));
        assert!(v.validate(&check("T-500")).await.unwrap_err().contains("500"));
        assert!(v.validate(&check("T-JUNK")).await.is_err());
        let bodies = server.await.unwrap();
        let first: serde_json::Value = serde_json::from_str(&bodies[0]).unwrap();
        assert_eq!(first["ticket_id"], "T-OK");
        assert_eq!(first["requester"], "bob");
        assert_eq!(first["account"], "root@db1");
        // Nothing listening: an error, not a hang or a panic.
        let dead = WebhookValidator::new("http://127.0.0.1:9/none").unwrap();
        assert!(dead.validate(&check("T-OK")).await.is_err());
    }
}
