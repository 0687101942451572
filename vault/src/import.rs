//! CSV import of resources and accounts (PMP 6.1 style).
//!
//! The first line is a header naming the columns, in any order, case-insensitive:
//! `name` (or `resource name`), `type`, `host` (or `dns name`/`ip`), `port`,
//! `account` (or `login`/`user account`), `password`, `private_key`,
//! `description`, `notes`. Unknown columns are an error (nothing is imported).
//! Each row is imported on its own: a bad row is reported with its line number
//! and the reason, and the good rows are kept.

use std::collections::HashMap;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::{Actor, RequestContext, ResourceType};
use crate::resources::{NewAccount, NewResource};
use crate::secret::SecretString;
use crate::Vault;

/// The outcome of an import.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImportReport {
    /// Data rows read.
    pub rows: u64,
    /// Resources created.
    pub resources_created: u64,
    /// Accounts created.
    pub accounts_created: u64,
    /// Rows that failed, with why.
    pub errors: Vec<ImportRowError>,
}

/// One failed row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImportRowError {
    /// Line number in the file (the header is line 1).
    pub line: u64,
    /// The field at fault, when known.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

const MAX_ROWS: u64 = 10_000;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Col {
    Name,
    Type,
    Host,
    Port,
    Account,
    Password,
    PrivateKey,
    Description,
    Notes,
}

fn column(h: &str) -> Option<Col> {
    let n: String = h
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c == ' ' || c == '-' { '_' } else { c })
        .collect();
    Some(match n.as_str() {
        "name" | "resource_name" | "resource" => Col::Name,
        "type" | "resource_type" => Col::Type,
        "host" | "dns_name" | "ip" | "ip_address" | "dns_name/ip" => Col::Host,
        "port" => Col::Port,
        "account" | "login" | "user_account" | "account_name" => Col::Account,
        "password" => Col::Password,
        "private_key" | "key" => Col::PrivateKey,
        "description" => Col::Description,
        "notes" => Col::Notes,
        _ => return None,
    })
}

fn field_name(c: Col) -> &'static str {
    match c {
        Col::Name => "name",
        Col::Type => "type",
        Col::Host => "host",
        Col::Port => "port",
        Col::Account => "account",
        Col::Password => "password",
        Col::PrivateKey => "private_key",
        Col::Description => "description",
        Col::Notes => "notes",
    }
}

impl Vault {
    /// Imports resources and accounts from CSV bytes.
    pub async fn import_resources_csv(&self, actor: &Actor, data: &[u8], ctx: &RequestContext) -> Result<ImportReport> {
        self.require(
            actor,
            crate::Action::Import,
            crate::Object::System,
            "import.resources",
            "resource",
            None,
            ctx,
        )
        .await?;
        let mut rdr = csv::ReaderBuilder::new()
            .flexible(true)
            .trim(csv::Trim::Headers)
            .from_reader(data);
        let headers = rdr
            .headers()
            .map_err(|e| Error::Csv(format!("header line: {e}")))?
            .clone();
        let mut cols: HashMap<Col, usize> = HashMap::new();
        for (i, h) in headers.iter().enumerate() {
            match column(h) {
                Some(c) => {
                    if cols.insert(c, i).is_some() {
                        return Err(Error::Csv(format!("column {:?} appears twice", h)));
                    }
                }
                None => {
                    return Err(Error::Csv(format!(
                        "unknown column {:?} in the header (line 1)",
                        truncate(h)
                    )))
                }
            }
        }
        for needed in [Col::Name, Col::Type, Col::Host] {
            if !cols.contains_key(&needed) {
                return Err(Error::Csv(format!("the header has no {:?} column", field_name(needed))));
            }
        }
        let mut report = ImportReport::default();
        let mut record = csv::StringRecord::new();
        loop {
            let line = rdr.position().line();
            match rdr.read_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {}
                Err(e) => {
                    report.errors.push(ImportRowError {
                        line,
                        field: None,
                        message: format!("unreadable row: {e}"),
                    });
                    if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                        break;
                    }
                    continue;
                }
            }
            report.rows += 1;
            if report.rows > MAX_ROWS {
                report.errors.push(ImportRowError {
                    line,
                    field: None,
                    message: format!("more than {MAX_ROWS} rows; the rest was not imported"),
                });
                break;
            }
            if record.iter().all(|f| f.trim().is_empty()) {
                report.rows -= 1;
                continue;
            }
            let fields: HashMap<Col, String> = cols
                .iter()
                .filter_map(|(&c, &i)| {
                    record
                        .get(i)
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|v| (c, v.to_owned()))
                })
                .collect();
            if let Err(e) = self.import_row(actor, &fields, &mut report, ctx).await {
                let (field, message) = match &e {
                    Error::Invalid { field, message } => (Some(field.to_string()), message.clone()),
                    Error::Forbidden { reason } => (None, format!("permission denied: {reason}")),
                    other => (None, other.to_string()),
                };
                report.errors.push(ImportRowError { line, field, message });
            }
        }
        self.audit_alone(
            crate::audit::NewEvent::by(actor, "import.resources", "resource").detail(format!(
                "{} rows: {} resources and {} accounts created, {} rows rejected",
                report.rows,
                report.resources_created,
                report.accounts_created,
                report.errors.len()
            )),
            ctx,
        )
        .await?;
        Ok(report)
    }

    async fn import_row(
        &self,
        actor: &Actor,
        fields: &HashMap<Col, String>,
        report: &mut ImportReport,
        ctx: &RequestContext,
    ) -> Result<()> {
        let get = |c: Col| fields.get(&c).map(String::as_str);
        let name = get(Col::Name).ok_or_else(|| Error::invalid("name", "is empty"))?;
        let type_s = get(Col::Type).ok_or_else(|| Error::invalid("type", "is empty"))?;
        let resource_type = ResourceType::parse(type_s)
            .ok_or_else(|| Error::invalid("type", format!("unknown resource type {:?}", truncate(type_s))))?;
        let host = get(Col::Host).ok_or_else(|| Error::invalid("host", "is empty"))?;
        let port = match get(Col::Port) {
            None => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| Error::invalid("port", format!("{:?} is not a port number", truncate(p))))?,
            ),
        };
        let account = get(Col::Account);
        let password = get(Col::Password);
        let private_key = get(Col::PrivateKey);
        if account.is_none() && (password.is_some() || private_key.is_some()) {
            return Err(Error::invalid(
                "account",
                "a password or key is given without an account name",
            ));
        }
        let existing = self
            .list_resources(actor, ctx)
            .await?
            .into_iter()
            .find(|r| r.name == name);
        let resource_id = match existing {
            Some(r) => r.id,
            None => {
                let r = self
                    .create_resource(
                        actor,
                        NewResource {
                            name: name.to_owned(),
                            resource_type,
                            host: host.to_owned(),
                            port,
                            description: get(Col::Description).map(str::to_owned),
                            landing_chain: Vec::new(),
                            extra: Default::default(),
                            allow_port_forwarding: false,
                            allow_agent_forwarding: false,
                            allow_clipboard: false,
                            allow_drive: false,
                        },
                        ctx,
                    )
                    .await?;
                report.resources_created += 1;
                r.id
            }
        };
        if let Some(login) = account {
            self.create_account(
                actor,
                &resource_id,
                NewAccount {
                    login: login.to_owned(),
                    password: password.map(SecretString::from),
                    private_key: private_key.map(SecretString::from),
                    notes: get(Col::Notes).map(str::to_owned),
                },
                ctx,
            )
            .await?;
            report.accounts_created += 1;
        }
        Ok(())
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::vault;

    #[tokio::test]
    async fn bad_rows_reported_good_rows_kept() {
        let dir = tempfile::tempdir().unwrap();
        let v = vault(dir.path()).await;
        let sys = Actor::system();
        let ctx = RequestContext::default();
        let csv = "Resource Name,Type,Host,Port,Account,Password,Notes\n\
                   web1,Linux,10.0.0.1,22,root,pw-one,first\n\
                   web1,Linux,10.0.0.1,22,deploy,pw-two,\n\
                   bad1,Toaster,10.0.0.2,22,root,pw,\n\
                   bad2,Linux,10.0.0.3,99999,root,pw,\n\
                   \"quoted, name\",Windows,win.example,,Administrator,\"p,w\",\n\
                   bad3,Linux,,22,root,pw,\n\
                   ,,,,,,\n";
        let r = v.import_resources_csv(&sys, csv.as_bytes(), &ctx).await.unwrap();
        assert_eq!(r.rows, 6);
        assert_eq!(r.resources_created, 2);
        assert_eq!(r.accounts_created, 3);
        let lines: Vec<(u64, Option<String>)> = r.errors.iter().map(|e| (e.line, e.field.clone())).collect();
        assert_eq!(
            lines,
            vec![
                (4, Some("type".into())),
                (5, Some("port".into())),
                (7, Some("host".into()))
            ],
            "{r:?}"
        );
        let res = v.list_resources(&sys, &ctx).await.unwrap();
        let win = res.iter().find(|r| r.name == "quoted, name").unwrap();
        assert_eq!(win.port, 3389);
        let accts = v.list_accounts(&sys, &win.id, &ctx).await.unwrap();
        let l = v
            .retrieve_secret(&sys, &accts[0].id, crate::SecretKind::Password, &ctx)
            .await
            .unwrap();
        assert_eq!(l.expose_str(), Some("p,w"));
    }

    #[tokio::test]
    async fn unusable_header_is_an_error_and_imports_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let v = vault(dir.path()).await;
        let sys = Actor::system();
        let ctx = RequestContext::default();
        let e = v
            .import_resources_csv(&sys, b"name,colour\nx,red\n", &ctx)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
        let e = v
            .import_resources_csv(&sys, b"name,host\nx,h\n", &ctx)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("type"), "{e}");
        let r = v.import_resources_csv(&sys, b"", &ctx).await;
        assert!(r.is_err());
        assert!(v.list_resources(&sys, &ctx).await.unwrap().is_empty());
    }
}
