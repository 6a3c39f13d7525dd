-- Events of schema 3 say the currency of every price (issue 17). An order's and a
-- product's currency, as their OrderCreated and StockUpdated say. Every row here before
-- this migration was projected from older events, which were all in pounds (the
-- upcaster fills in GBP for them too); so is every row a process of the previous release
-- writes during a rolling upgrade, which does not know the column: hence the default.
ALTER TABLE rm_orders ADD COLUMN currency TEXT NOT NULL DEFAULT 'GBP';
ALTER TABLE rm_inventory ADD COLUMN currency TEXT NOT NULL DEFAULT 'GBP';
