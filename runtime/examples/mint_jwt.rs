//! Prints an RS256 JWT for the benchmarks (`bench/run.sh jwt`): subject `bench`, the role
//! given, valid for an hour, signed with a PEM private key.
//!
//! Run: `cargo run --release -p lithair-runtime --example mint_jwt -- KEY.pem ROLE`

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(key), Some(role)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: mint_jwt KEY.pem ROLE");
    };
    let key = EncodingKey::from_rsa_pem(&std::fs::read(&key)?)?;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 3600;
    let claims = serde_json::json!({"sub": "bench", "exp": exp, "roles": [role]});
    println!("{}", encode(&Header::new(Algorithm::RS256), &claims, &key)?);
    Ok(())
}
