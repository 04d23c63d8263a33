-- Batches on the way down (events/batch.py, service/fanout.py): the dictionaries a site's agent
-- said it reads in its last receipt request (care.receipt, service/receipts.py); an empty array:
-- batches without a dictionary; NULL: one event per message, as agents before batches read them
-- (and as an agent that was put back to an older release says by saying nothing).
ALTER TABLE sites ADD COLUMN IF NOT EXISTS down_batches text[];
