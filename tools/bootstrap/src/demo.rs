//! `estate-bootstrap demo-data --postgres HOST:PORT --postgres-ca FILE
//! [--database NAME] --secrets DIR`: what a demo of a fresh estate needs and
//! a production estate must not get — a small catalogue (products with stock
//! in inventory, their prices in orders), written as each schema's owner
//! (the passwords `configure` left in `DIR/<service>-migrate/password`), and
//! a generated password per demo user in `DIR/demo-users/<name>` (0400) for
//! `auth users import`. Re-runs change nothing: existing products, prices
//! and password files are kept.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sqlx::postgres::{PgConnectOptions, PgSslMode};

use crate::certs::{random_hex, write_file};

/// The demo catalogue: SKU, name, stock, unit price in euro cents.
pub(crate) const CATALOGUE: [(&str, &str, i32, i64); 3] =
    [("TEA-01", "Green tea", 100, 450), ("TEA-02", "Black tea", 100, 600), ("CUP-01", "Cup", 20, 1200)];
/// The demo users.
pub(crate) const USERS: [&str; 2] = ["alice", "bob"];

pub(crate) struct Settings {
    pub(crate) postgres_host: String,
    pub(crate) postgres_port: u16,
    pub(crate) postgres_ca: PathBuf,
    pub(crate) database: String,
    pub(crate) secrets: PathBuf,
}

/// Connect as `<schema>_owner` with the password `configure` wrote for `service`.
async fn connect_as_owner(settings: &Settings, service: &str, schema: &str) -> Result<sqlx::PgConnection> {
    let password_file = settings.secrets.join(format!("{service}-migrate/password"));
    let password = std::fs::read_to_string(&password_file)
        .with_context(|| format!("{} (written by `configure`)", password_file.display()))?;
    let options = PgConnectOptions::new()
        .host(&settings.postgres_host)
        .port(settings.postgres_port)
        .database(&settings.database)
        .username(&format!("{schema}_owner"))
        .password(password.trim())
        .ssl_mode(PgSslMode::VerifyFull)
        .ssl_root_cert_from_pem(std::fs::read(&settings.postgres_ca).context("Postgres CA")?);
    <sqlx::PgConnection as sqlx::Connection>::connect_with(&options)
        .await
        .with_context(|| format!("connect to Postgres as {schema}_owner"))
}

pub(crate) async fn run(settings: &Settings) -> Result<String> {
    let mut inventory = connect_as_owner(settings, "inventory", "inventory").await?;
    let mut orders = connect_as_owner(settings, "order", "orders").await?;
    let mut added = 0;
    for (sku, name, stock, price) in CATALOGUE {
        let product = sqlx::query(
            "INSERT INTO inventory.products (sku, name, available) VALUES ($1, $2, $3) ON CONFLICT (sku) DO NOTHING",
        )
        .bind(sku)
        .bind(name)
        .bind(stock)
        .execute(&mut inventory)
        .await
        .context("inventory.products (has `inventory migrate` run?)")?;
        sqlx::query(
            "INSERT INTO orders.prices (sku, unit_price_cents, currency) VALUES ($1, $2, 'EUR') \
             ON CONFLICT (sku) DO NOTHING",
        )
        .bind(sku)
        .bind(price)
        .execute(&mut orders)
        .await
        .context("orders.prices (has `order migrate` run?)")?;
        added += product.rows_affected();
    }
    let mut generated = Vec::new();
    for user in USERS {
        let file = settings.secrets.join("demo-users").join(user);
        if !Path::new(&file).exists() {
            write_file(&file, &random_hex()?, 0o400)?;
            generated.push(user);
        }
    }
    Ok(format!(
        "demo data: {added} new products (of {}); passwords generated for [{}] in {}",
        CATALOGUE.len(),
        generated.join(", "),
        settings.secrets.join("demo-users").display()
    ))
}
