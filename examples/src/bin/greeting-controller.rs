//! Runs the Greeting controller against the cluster of the current kubeconfig.

#[tokio::main]
async fn main() -> Result<(), bosun_client::Error> {
    let client = bosun_client::Client::try_default()?;
    bosun_examples::greeting::install_crd(&client).await?;
    bosun_examples::greeting::run(client).await;
    Ok(())
}
