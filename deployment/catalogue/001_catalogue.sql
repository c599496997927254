-- The reference stack's catalogue: a second database in the compose PostgreSQL, with the
-- tables ml-analyze's migrations create (catalogue-schema.md; the test suite's catalogues are
-- made from this file too). Run once, by the postgres image,
-- when its data volume is new. Against the production ml-analyze the catalogue is its own
-- database: point CATALOGUE_DATABASE_URL at it instead (docs/deployment.md).
CREATE DATABASE catalogue;
\connect catalogue
CREATE EXTENSION IF NOT EXISTS pgcrypto;

CREATE TABLE suppliers (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name varchar(255) NOT NULL,
    source_type varchar(50) NOT NULL,
    contact_email varchar(255),
    metadata jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT check_source_type CHECK (source_type IN ('google_sheets', 'csv', 'excel'))
);
CREATE INDEX idx_suppliers_source_type ON suppliers (source_type);
CREATE INDEX idx_suppliers_name ON suppliers (name);

CREATE TABLE products (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name varchar(500) NOT NULL
);

CREATE TYPE match_status AS ENUM ('unmatched', 'auto_matched', 'potential_match', 'verified_match');

CREATE TABLE supplier_items (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    supplier_id uuid NOT NULL REFERENCES suppliers (id) ON DELETE CASCADE,
    product_id uuid REFERENCES products (id) ON DELETE SET NULL,
    supplier_sku varchar(255) NOT NULL,
    name varchar(500) NOT NULL,
    current_price numeric(10, 2) NOT NULL CHECK (current_price >= 0),
    characteristics jsonb NOT NULL DEFAULT '{}',
    last_ingested_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    match_status match_status NOT NULL DEFAULT 'unmatched',
    match_score numeric(5, 2) CHECK (match_score >= 0 AND match_score <= 100),
    match_candidates jsonb,
    CONSTRAINT unique_supplier_sku UNIQUE (supplier_id, supplier_sku)
);

CREATE TABLE parsing_logs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    task_id varchar(255) NOT NULL,
    supplier_id uuid REFERENCES suppliers (id) ON DELETE SET NULL,
    error_type varchar(100) NOT NULL,
    error_message text NOT NULL,
    row_number integer,
    row_data jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_parsing_logs_task_id ON parsing_logs (task_id);
CREATE INDEX idx_parsing_logs_supplier_id ON parsing_logs (supplier_id);
