"""Events out: payloads, Standard Webhooks signing, delivery (HTTP, SQS), retries, dispatcher.

The outbox itself (event and delivery rows) is `receiver.index.events`; this
package turns due deliveries into signed requests. See docs/design.md,
"Events out".
"""
