-- The insurers API shows each insurer's last offer time; this keeps that lookup cheap.
CREATE INDEX tasks_offers ON tasks (insurer, updated_at) WHERE status = 'offer';
