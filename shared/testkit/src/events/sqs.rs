//! SQS event source records (`SqsEvent` batches, as Lambda's event source mapping sends them).

use aws_lambda_events::encodings::Base64Data;
use aws_lambda_events::sqs::{SqsEvent, SqsMessage, SqsMessageAttribute};
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::base::{serialize, EventJson, QUEUE_ARN, REGION};

/// One SQS message as a record of the event Lambda sends ([`SqsMessage`]).
///
/// Starts with `messageId`, `body`, `eventSource: "aws:sqs"`, `eventSourceARN`
/// [`QUEUE_ARN`] and `awsRegion` [`REGION`]; everything else (receipt handle, digests,
/// system attributes such as `MessageGroupId`, message attributes) is only there when set.
///
/// ```
/// use testkit::events::{sqs_event, SqsRecord};
///
/// let event = sqs_event([
///     SqsRecord::new("m-1", r#"{"type":"place_order"}"#)
///         .message_group_id("acct-1")
///         .approximate_receive_count(1)
///         .build(),
///     SqsRecord::new("m-2", r#"{"type":"cancel_order"}"#)
///         .message_group_id("acct-2")
///         .build(),
/// ]);
/// assert_eq!(event.records[0].attributes["MessageGroupId"], "acct-1");
/// ```
#[derive(Debug, Clone)]
pub struct SqsRecord {
    message: SqsMessage,
}

impl SqsRecord {
    /// A record of message `message_id` with `body`.
    pub fn new(message_id: impl Into<String>, body: impl Into<String>) -> Self {
        let mut message = SqsMessage::default();
        message.message_id = Some(message_id.into());
        message.body = Some(body.into());
        message.event_source = Some("aws:sqs".to_string());
        message.event_source_arn = Some(QUEUE_ARN.to_string());
        message.aws_region = Some(REGION.to_string());
        Self { message }
    }

    /// `eventSourceARN`: the queue (default [`QUEUE_ARN`]).
    pub fn queue_arn(mut self, arn: impl Into<String>) -> Self {
        self.message.event_source_arn = Some(arn.into());
        self
    }

    /// `awsRegion` (default [`REGION`]).
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.message.aws_region = Some(region.into());
        self
    }

    /// `receiptHandle`.
    pub fn receipt_handle(mut self, handle: impl Into<String>) -> Self {
        self.message.receipt_handle = Some(handle.into());
        self
    }

    /// `md5OfBody`.
    pub fn md5_of_body(mut self, md5: impl Into<String>) -> Self {
        self.message.md5_of_body = Some(md5.into());
        self
    }

    /// `md5OfMessageAttributes`.
    pub fn md5_of_message_attributes(mut self, md5: impl Into<String>) -> Self {
        self.message.md5_of_message_attributes = Some(md5.into());
        self
    }

    /// A system attribute (`attributes`), e.g. `MessageDeduplicationId`, `SenderId`.
    pub fn attribute(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.message.attributes.insert(name.into(), value.into());
        self
    }

    /// `attributes.MessageGroupId` (FIFO queues: the executor's ordering key, the account).
    pub fn message_group_id(self, group_id: impl Into<String>) -> Self {
        self.attribute("MessageGroupId", group_id)
    }

    /// `attributes.MessageDeduplicationId` (FIFO queues).
    pub fn message_deduplication_id(self, id: impl Into<String>) -> Self {
        self.attribute("MessageDeduplicationId", id)
    }

    /// `attributes.SequenceNumber` (FIFO queues).
    pub fn sequence_number(self, n: impl ToString) -> Self {
        self.attribute("SequenceNumber", n.to_string())
    }

    /// `attributes.ApproximateReceiveCount`: 1 on the first delivery.
    pub fn approximate_receive_count(self, n: u32) -> Self {
        self.attribute("ApproximateReceiveCount", n.to_string())
    }

    /// `attributes.SentTimestamp` (epoch milliseconds).
    pub fn sent_timestamp(self, at: DateTime<Utc>) -> Self {
        self.attribute("SentTimestamp", at.timestamp_millis().to_string())
    }

    /// A message attribute (`messageAttributes`).
    pub fn message_attribute(
        mut self,
        name: impl Into<String>,
        value: SqsMessageAttribute,
    ) -> Self {
        self.message.message_attributes.insert(name.into(), value);
        self
    }

    /// A `String` message attribute.
    pub fn string_attribute(self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let mut attr = SqsMessageAttribute::default();
        attr.data_type = Some("String".to_string());
        attr.string_value = Some(value.into());
        self.message_attribute(name, attr)
    }

    /// A `Binary` message attribute (base64 in the JSON).
    pub fn binary_attribute(self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        let mut attr = SqsMessageAttribute::default();
        attr.data_type = Some("Binary".to_string());
        attr.binary_value = Some(base64_data(value.into()));
        self.message_attribute(name, attr)
    }

    /// Change the typed record directly (for what the setters do not cover, e.g. a field
    /// that is absent).
    pub fn edit(mut self, f: impl FnOnce(&mut SqsMessage)) -> Self {
        f(&mut self.message);
        self
    }

    /// The typed record.
    pub fn build(&self) -> SqsMessage {
        self.message.clone()
    }

    /// The record as Lambda sends it (JSON value).
    pub fn to_value(&self) -> Value {
        self.message.to_value()
    }

    /// The record as Lambda sends it (JSON text).
    pub fn to_json(&self) -> String {
        self.to_value().to_string()
    }
}

/// Bytes as the `Base64Data` of a binary message attribute.
fn base64_data(bytes: Vec<u8>) -> Base64Data {
    let mut data = Base64Data::default();
    data.0 = bytes;
    data
}

/// The event of one batch: `{"Records": [...]}`.
pub fn sqs_event(records: impl IntoIterator<Item = SqsMessage>) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = records.into_iter().collect();
    event
}

impl EventJson for SqsMessage {
    fn to_value(&self) -> Value {
        let mut v = serialize(self, "SQS record");
        // Lambda leaves the digest out when the message has no attributes.
        if let Some(record) = v.as_object_mut() {
            if record
                .get("md5OfMessageAttributes")
                .is_some_and(Value::is_null)
            {
                record.remove("md5OfMessageAttributes");
            }
        }
        v
    }
}

impl EventJson for SqsEvent {
    fn to_value(&self) -> Value {
        let records: Vec<Value> = self.records.iter().map(EventJson::to_value).collect();
        serde_json::json!({ "Records": records })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn full() -> SqsRecord {
        SqsRecord::new(
            "059f36b4-87a3-44ab-83d2-661975830a7d",
            r#"{"type":"place_order"}"#,
        )
        .receipt_handle("AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a")
        .md5_of_body("e4e68fb7bd0e697a0ae8f1bb342846b3")
        .md5_of_message_attributes("abcd")
        .message_group_id("acct-1")
        .approximate_receive_count(1)
        .sent_timestamp(DateTime::from_timestamp_millis(1_723_075_200_000).unwrap())
        .string_attribute("kind", "order")
        .binary_attribute("blob", [1u8, 2, 3])
    }

    /// As the devstack's hand-written `record_from_message` sent them before.
    #[test]
    fn json_is_what_the_devstack_sent_before() {
        assert_eq!(
            full().to_value(),
            json!({
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "MessageGroupId": "acct-1",
                    "SentTimestamp": "1723075200000"
                },
                "awsRegion": "us-east-1",
                "body": "{\"type\":\"place_order\"}",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:commands.fifo",
                "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
                "md5OfMessageAttributes": "abcd",
                "messageAttributes": {
                    "blob": {
                        "binaryListValues": [],
                        "binaryValue": "AQID",
                        "dataType": "Binary",
                        "stringListValues": [],
                        "stringValue": null
                    },
                    "kind": {
                        "binaryListValues": [],
                        "binaryValue": null,
                        "dataType": "String",
                        "stringListValues": [],
                        "stringValue": "order"
                    }
                },
                "messageId": "059f36b4-87a3-44ab-83d2-661975830a7d",
                "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a"
            })
        );
        assert_eq!(
            SqsRecord::new("m2", "x")
                .queue_arn("arn:aws:sqs:us-east-1:123456789012:q")
                .region("eu-west-1")
                .to_value(),
            json!({
                "attributes": {},
                "awsRegion": "eu-west-1",
                "body": "x",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q",
                "md5OfBody": null,
                "messageAttributes": {},
                "messageId": "m2",
                "receiptHandle": null
            })
        );
    }

    #[test]
    fn deserializes_with_aws_lambda_events_to_the_built_event() {
        let event = sqs_event([
            full().build(),
            SqsRecord::new("m2", "{}")
                .message_group_id("acct-2")
                .message_deduplication_id("d2")
                .sequence_number(18_887_000_000_000_000_000_u128)
                .attribute("SenderId", "AIDAEXAMPLE")
                .edit(|m| m.receipt_handle = Some("rh".into()))
                .build(),
        ]);
        let text = event.to_json();
        let parsed: SqsEvent = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed, event);
        assert_eq!(parsed.records.len(), 2);
        let first = &parsed.records[0];
        assert_eq!(
            first.message_id.as_deref(),
            Some("059f36b4-87a3-44ab-83d2-661975830a7d")
        );
        assert_eq!(first.attributes["MessageGroupId"], "acct-1");
        assert_eq!(first.event_source.as_deref(), Some("aws:sqs"));
        assert_eq!(
            first.message_attributes["blob"].binary_value.as_deref(),
            Some(&vec![1u8, 2, 3])
        );
        let second = &parsed.records[1];
        assert_eq!(second.attributes["SequenceNumber"], "18887000000000000000");
        assert_eq!(second.attributes["MessageDeduplicationId"], "d2");
        assert_eq!(second.receipt_handle.as_deref(), Some("rh"));
        assert!(second.md5_of_message_attributes.is_none());
        let v: Value = serde_json::from_str(&text).unwrap();
        assert!(v["Records"][1].get("md5OfMessageAttributes").is_none());
    }
}
