-- RDP virtual-channel policy per resource: clipboard (cliprdr) and drive redirection (rdpdr), off by default.
ALTER TABLE resources ADD COLUMN allow_clipboard INTEGER NOT NULL DEFAULT 0;
ALTER TABLE resources ADD COLUMN allow_drive INTEGER NOT NULL DEFAULT 0;
