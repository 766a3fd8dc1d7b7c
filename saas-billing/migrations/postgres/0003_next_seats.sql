-- saas-billing 0003: a seat change that waits for the period end with its
-- downgrade.
ALTER TABLE billing_subscriptions ADD COLUMN next_seats bigint;
