//! The command queue (SQS FIFO): one message group per account keeps an account's commands
//! in order; the deduplication id comes from the command, so retries are dropped.

use aws_sdk_sqs::Client;
use domain::command::Command;
use tokio::sync::OnceCell;

use crate::error::DependencyError;

pub struct CommandQueue {
    queue_url: String,
    client: OnceCell<Client>,
}

impl CommandQueue {
    /// The SDK client is built on first use (loading AWS config costs a few ms of init).
    pub fn new(queue_url: &str) -> CommandQueue {
        CommandQueue {
            queue_url: queue_url.to_string(),
            client: OnceCell::new(),
        }
    }

    pub fn from_client(queue_url: &str, client: Client) -> CommandQueue {
        CommandQueue {
            queue_url: queue_url.to_string(),
            client: OnceCell::new_with(Some(client)),
        }
    }

    pub async fn client(&self) -> &Client {
        self.client
            .get_or_init(|| async { Client::new(crate::aws::sdk_config().await) })
            .await
    }

    pub fn url(&self) -> &str {
        &self.queue_url
    }

    pub async fn send(&self, command: &Command) -> Result<(), DependencyError> {
        let body = serde_json::to_string(command).map_err(DependencyError::queue)?;
        self.client()
            .await
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .message_group_id(command.message_group_id())
            .message_deduplication_id(command.deduplication_id())
            .send()
            .await
            .map_err(|e| DependencyError::queue(aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        Ok(())
    }

    /// Sends several commands with `SendMessageBatch`, ten per request (the SQS limit), each
    /// with its account's message group and its deduplication id. Commands of one group keep
    /// their order. Any entry SQS refused makes the result an error naming how many and why;
    /// the others were sent.
    pub async fn send_batch(&self, commands: &[Command]) -> Result<(), DependencyError> {
        use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
        let mut failures: Vec<String> = Vec::new();
        for chunk in commands.chunks(10) {
            let mut entries = Vec::with_capacity(chunk.len());
            for (i, command) in chunk.iter().enumerate() {
                let body = serde_json::to_string(command).map_err(DependencyError::queue)?;
                let entry = SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body)
                    .message_group_id(command.message_group_id())
                    .message_deduplication_id(command.deduplication_id())
                    .build()
                    .map_err(DependencyError::queue)?;
                entries.push(entry);
            }
            match self
                .client()
                .await
                .send_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
            {
                Ok(out) => failures.extend(out.failed.iter().map(|f| {
                    let i: usize = f.id.parse().unwrap_or(usize::MAX);
                    let order = chunk.get(i).map(|c| c.order_id().to_string());
                    format!(
                        "{} ({}): {}",
                        order.unwrap_or_else(|| f.id.clone()),
                        f.code,
                        f.message.as_deref().unwrap_or("")
                    )
                })),
                Err(e) => {
                    return Err(DependencyError::queue(
                        aws_sdk_sqs::error::DisplayErrorContext(e),
                    ))
                }
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(DependencyError::queue(format!(
                "{} of {} commands not sent: {}",
                failures.len(),
                commands.len(),
                failures.join("; ")
            )))
        }
    }

    /// Hides received messages for the given seconds from now (`ChangeMessageVisibility`,
    /// ten per request): the executor's retry schedule for commands it could not apply.
    /// `hidings` are (receipt handle, seconds). Entries SQS refused (a receipt that expired)
    /// are an error naming how many; the others took effect.
    pub async fn hide(&self, hidings: &[(String, u32)]) -> Result<(), DependencyError> {
        use aws_sdk_sqs::types::ChangeMessageVisibilityBatchRequestEntry;
        let mut refused = 0usize;
        let mut first_reason = String::new();
        for chunk in hidings.chunks(10) {
            let mut entries = Vec::with_capacity(chunk.len());
            for (i, (receipt, secs)) in chunk.iter().enumerate() {
                let entry = ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(receipt)
                    .visibility_timeout(i32::try_from(*secs).unwrap_or(i32::MAX))
                    .build()
                    .map_err(DependencyError::queue)?;
                entries.push(entry);
            }
            let out = self
                .client()
                .await
                .change_message_visibility_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| DependencyError::queue(aws_sdk_sqs::error::DisplayErrorContext(e)))?;
            if let Some(f) = out.failed.first() {
                if first_reason.is_empty() {
                    first_reason = format!("{}: {}", f.code, f.message.as_deref().unwrap_or(""));
                }
            }
            refused += out.failed.len();
        }
        if refused == 0 {
            Ok(())
        } else {
            Err(DependencyError::queue(format!(
                "{refused} of {} visibility changes refused, first: {first_reason}",
                hidings.len()
            )))
        }
    }

    /// Health: the queue exists and answers.
    pub async fn ping(&self) -> Result<(), DependencyError> {
        self.client()
            .await
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .map_err(|e| DependencyError::queue(aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        Ok(())
    }
}
