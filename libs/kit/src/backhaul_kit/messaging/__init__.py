"""Transactional outbox, relay, inbox and the Kafka consumer every service uses."""
