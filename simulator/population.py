"""The simulated population of issuers: who they are, where, in which sector."""

from __future__ import annotations

import datetime as dt
import random
import unicodedata
from dataclasses import dataclass

# (GSO code, name, population weight): the city and towns dense, the mountain districts sparse.
THANH_HOA_UNITS: tuple[tuple[str, str, float], ...] = (
    ("380", "Thành phố Thanh Hóa", 18.0), ("381", "Thị xã Bỉm Sơn", 3.0), ("382", "Thành phố Sầm Sơn", 4.5),
    ("384", "Huyện Mường Lát", 0.4), ("385", "Huyện Quan Hóa", 0.7), ("386", "Huyện Bá Thước", 1.1),
    ("387", "Huyện Quan Sơn", 0.5), ("388", "Huyện Lang Chánh", 0.6), ("389", "Huyện Ngọc Lặc", 1.8),
    ("390", "Huyện Cẩm Thủy", 1.6), ("391", "Huyện Thạch Thành", 1.8), ("392", "Huyện Hà Trung", 2.2),
    ("393", "Huyện Vĩnh Lộc", 1.6), ("394", "Huyện Yên Định", 2.8), ("395", "Huyện Thọ Xuân", 3.6),
    ("396", "Huyện Thường Xuân", 1.1), ("397", "Huyện Triệu Sơn", 3.2), ("398", "Huyện Thiệu Hóa", 2.5),
    ("399", "Huyện Hoằng Hóa", 3.8), ("400", "Huyện Hậu Lộc", 2.6), ("401", "Huyện Nga Sơn", 2.3),
    ("402", "Huyện Như Xuân", 0.9), ("403", "Huyện Như Thanh", 1.3), ("404", "Huyện Nông Cống", 2.7),
    ("405", "Huyện Đông Sơn", 1.9), ("406", "Huyện Quảng Xương", 3.5), ("407", "Thị xã Nghi Sơn", 5.0),
)  # fmt: skip


@dataclass(frozen=True)
class SectorProfile:
    vsic_code: str
    share: float  # of issuers
    adoption: float  # share of obliged businesses that issue
    invoices_per_day: float  # per active issuer
    ticket_vnd: int  # median amount before VAT
    vat_rate: int
    non_cash: float


SECTORS: tuple[SectorProfile, ...] = (
    SectorProfile("4711", 0.05, 0.80, 180, 250_000, 8, 0.55),
    SectorProfile("4730", 0.04, 1.00, 320, 180_000, 10, 0.35),
    SectorProfile("4772", 0.10, 0.70, 45, 120_000, 5, 0.30),
    SectorProfile("4719", 0.20, 0.55, 30, 90_000, 8, 0.25),
    SectorProfile("5510", 0.06, 0.60, 12, 600_000, 8, 0.50),
    SectorProfile("5610", 0.25, 0.50, 40, 150_000, 8, 0.30),
    SectorProfile("5630", 0.15, 0.45, 35, 40_000, 8, 0.25),
    SectorProfile("9602", 0.10, 0.40, 14, 80_000, 8, 0.20),
    SectorProfile("4771", 0.05, 0.50, 15, 300_000, 8, 0.35),
)  # fmt: skip

_SURNAMES = ("Nguyễn", "Lê", "Trần", "Phạm", "Hoàng", "Vũ", "Đỗ", "Bùi", "Trịnh", "Lường")
_WORDS = {
    "4711": "Siêu thị", "4730": "Cửa hàng xăng dầu", "4772": "Nhà thuốc", "4719": "Tạp hóa", "5510": "Nhà nghỉ",
    "5610": "Nhà hàng", "5630": "Quán cà phê", "9602": "Salon tóc", "4771": "Shop thời trang",
}  # fmt: skip


@dataclass(frozen=True)
class Business:
    seller_id: str
    name: str
    vsic_code: str
    admin_unit_code: str
    obliged: bool
    adopter: bool
    registers: tuple[str, ...]
    valid_from: dt.date

    def registration(self) -> dict[str, object]:
        return {
            "seller_id": self.seller_id, "name": self.name, "vsic_code": self.vsic_code,
            "admin_unit_code": self.admin_unit_code, "obliged": self.obliged, "status": "ACTIVE",
            "valid_from": self.valid_from,
        }  # fmt: skip


def _seller_id(rng: random.Random, index: int) -> str:
    kind = rng.random()
    if kind < 0.35:
        return f"28{index:08d}"  # enterprise, 10 digits
    if kind < 0.45:
        return f"28{index:08d}-{rng.randint(1, 999):03d}"  # branch
    return f"038{index:09d}"  # personal id of a household business, 12 digits


def build_population(count: int, seed: int, valid_from: dt.date = dt.date(2023, 1, 1)) -> list[Business]:
    """``count`` businesses spread over units and sectors by weight; deterministic for a seed."""
    rng = random.Random(seed)
    unit_codes = [u[0] for u in THANH_HOA_UNITS]
    unit_weights = [u[2] for u in THANH_HOA_UNITS]
    businesses = []
    for index in range(count):
        sector = rng.choices(SECTORS, weights=[s.share for s in SECTORS])[0]
        unit = rng.choices(unit_codes, weights=unit_weights)[0]
        seller_id = _seller_id(rng, index)
        name = unicodedata.normalize("NFC", f"{_WORDS[sector.vsic_code]} {rng.choice(_SURNAMES)} {index}")
        registers = tuple(f"{rng.choice('ABCDEFGHJK')}{rng.randint(0, 9999):04d}" for _ in range(rng.randint(1, 2)))
        businesses.append(
            Business(
                seller_id, name, sector.vsic_code, unit, True, rng.random() < sector.adoption, registers, valid_from
            )
        )
    return businesses
