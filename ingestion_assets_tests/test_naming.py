"""Safe file names on the shared volume, whatever the supplier's server suggested."""

from __future__ import annotations

import unicodedata

import pytest

from ingestion_assets.handoff.naming import MAX_NAME_BYTES, sanitize_filename


def assert_safe(name: str, extension: str) -> None:
    assert name.endswith(extension)
    assert "/" not in name and "\\" not in name
    assert not name.startswith(".")
    assert name not in (".", "..")
    assert all(unicodedata.category(ch)[0] != "C" for ch in name), repr(name)
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES
    assert len(name) > len(extension)  # a stem, not a hidden `.csv`


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("../../etc/passwd", "passwd.csv"),
        ("/etc/passwd", "passwd.csv"),
        ("..\\..\\windows\\win.ini", "win.ini.csv"),
        ("prices/../../../root/.ssh/authorized_keys", "authorized_keys.csv"),
        ("../", "price-list.csv"),
    ],
)
def test_no_directory_part_survives(raw, expected):
    name = sanitize_filename(raw, ".csv")
    assert name == expected
    assert_safe(name, ".csv")


def test_nul_is_removed():
    name = sanitize_filename("prices\x00.csv", ".csv")
    assert name == "prices.csv"
    assert "\x00" not in name


@pytest.mark.parametrize(
    "raw",
    [
        "line\nbreak.csv",
        "carriage\rreturn.csv",
        "\x1b[31mred\x1b[0m.csv",
        "tab\there.csv",
        "bell\x07.csv",
        "del\x7f.csv",
        "evil\u202egpj.csv",  # right-to-left override: shows as `evilvsc.jpg`
        "zero\u200bwidth.csv",
    ],
)
def test_control_and_format_characters_are_removed(raw):
    name = sanitize_filename(raw, ".csv")
    assert_safe(name, ".csv")
    for bad in ("\n", "\r", "\x1b", "\t", "\x07", "\x7f", "\u202e", "\u200b"):
        assert bad not in name


def test_control_characters_keep_the_visible_text():
    assert sanitize_filename("pri\nces\r\x1b.csv", ".csv") == "prices.csv"


@pytest.mark.parametrize(
    ("stem_char", "extension"), [("a", ".xlsx"), ("я", ".xlsx"), ("价", ".csv"), ("😀a", ".pdf")]
)
def test_a_300_character_name_is_cut_to_the_byte_limit_keeping_the_extension(stem_char, extension):
    raw = stem_char * 300 + extension
    name = sanitize_filename(raw, extension)
    assert_safe(name, extension)
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES
    assert len(name.encode("utf-8")) > MAX_NAME_BYTES - 8  # cut, not emptied
    name.encode("utf-8").decode("utf-8")  # never cut inside a character


def test_the_byte_limit_leaves_room_for_prefix_and_sidecar_suffix():
    worst = "_".join(
        ["0b6a1c8e-5a59-5d0e-9d43-4d3c3f0b2a10", "1714521600000", "x" * MAX_NAME_BYTES]
    )
    assert len((worst + ".meta.json").encode("utf-8")) < 255


@pytest.mark.parametrize(
    ("raw", "extension", "expected"),
    [
        ("Прайс-лист ООО Ромашка.xlsx", ".xlsx", "Прайс-лист_ООО_Ромашка.xlsx"),
        ("价格表2024.csv", ".csv", "价格表2024.csv"),
        ("Τιμοκατάλογος.pdf", ".pdf", "Τιμοκατάλογος.pdf"),
        ("قائمة الأسعار.csv", ".csv", "قائمة_الأسعار.csv"),
    ],
)
def test_letters_of_any_script_are_kept(raw, extension, expected):
    assert sanitize_filename(raw, extension) == expected


def test_decomposed_letters_are_normalized():
    decomposed = "Цен\u0438\u0306.csv"  # й as и + combining breve
    assert sanitize_filename(decomposed, ".csv") == "Цены.csv".replace("ы", "й")


@pytest.mark.parametrize("raw", ["", "   ", ".", "..", "...", "._ _.", "\x00\n\r", "/", "😀😀"])
def test_empty_or_meaningless_names_get_a_default(raw):
    assert sanitize_filename(raw, ".csv") == "price-list.csv"


def test_none_is_accepted_as_no_name():
    assert sanitize_filename(None, ".xlsx") == "price-list.xlsx"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "extension", "expected"),
    [
        ("prices.csv", ".xlsx", "prices.csv.xlsx"),
        ("prices.xlsx", ".csv", "prices.xlsx.csv"),
        ("invoice.pdf.exe", ".pdf", "invoice.pdf.exe.pdf"),
        ("PRICES.XLSX", ".xlsx", "PRICES.xlsx"),
        ("prices.xlsx", ".xlsx", "prices.xlsx"),
        ("prices", ".xls", "prices.xls"),
    ],
)
def test_the_extension_is_the_real_type(raw, extension, expected):
    assert sanitize_filename(raw, extension) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(".hidden.csv", "hidden.csv"), (".htaccess", "htaccess.csv"), ("..csv", "csv.csv")],
)
def test_a_name_never_starts_with_a_dot(raw, expected):
    name = sanitize_filename(raw, ".csv")
    assert name == expected
    assert_safe(name, ".csv")


@pytest.mark.parametrize(
    "raw", ['a<b>c:d"e|f?g*h.csv', "a b\tc.csv", "name;rm -rf ~.csv", "$(reboot).csv"]
)
def test_shell_and_windows_special_characters_are_replaced(raw):
    name = sanitize_filename(raw, ".csv")
    assert_safe(name, ".csv")
    for bad in '<>:"|?* \t;~$':
        assert bad not in name


def test_sidecar_fields_are_safe_to_display():
    """NUL, control and bidi characters from a hostile Content-Disposition or sheet cell never
    reach the sidecar; letters of any script do."""
    from ingestion_assets.handoff.sidecar import FileMetadata

    hostile = "Прайс\u202egpj.exe\x00\x07\u200b\tлист\n.xlsx"
    metadata = FileMetadata(
        original_filename=hostile,
        source_url="https://example.com/p?\x1b[31m",
        source_type="url",
        supplier_id="3f2b8c1e-7d4a-4e6b-9a51-0c2d7e8f9a10",
        supplier_name="ООО «Ромашка»\u2066\u2069",
        file_type="excel",
        mime_type="application/vnd.ms-excel",
        file_size_bytes=1,
        checksum_md5="0" * 32,
        downloaded_at="2026-12-03T00:00:00+00:00",
        downloaded_by="supplier-courier",
        job_id="run",
    )
    assert metadata.original_filename == "Прайсgpj.exe лист .xlsx"
    assert metadata.source_url == "https://example.com/p?[31m"
    assert metadata.supplier_name == "ООО «Ромашка»"
    for value in metadata.model_dump().values():
        if isinstance(value, str):
            assert not any(unicodedata.category(ch)[0] == "C" for ch in value), value
