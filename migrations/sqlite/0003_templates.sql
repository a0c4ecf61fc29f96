-- The data-directory template an instance was made from (an image id), if any: its container
-- runs that image with its volume mounted at the template's data path, also when the reconciler
-- recreates it. NULL for an instance whose server initialised its own data directory.
ALTER TABLE instances ADD COLUMN template_image TEXT;
