"""The Backhaul operator CLI: dead letters, topic tails and disconnect progress."""
