"""Board and report wording in Vietnamese (the analysts' language, the default) and English."""

from __future__ import annotations

LANGUAGES = ("vi", "en")

# key -> (Vietnamese, English)
TEXT: dict[str, tuple[str, str]] = {
    # boards
    "board.overview": (
        "Tổng quan tỉnh: áp dụng hóa đơn điện tử từ máy tính tiền",
        "Province overview: cash-register e-invoice adoption",
    ),
    "board.trends": ("Xu hướng áp dụng", "Adoption trends"),
    "board.drilldown": ("Chi tiết theo đơn vị / ngành", "Drill-down by unit or sector"),
    "board.alerts": ("Cảnh báo", "Alerts"),
    "board.pipeline": ("Tình trạng hệ thống", "Pipeline health"),
    "folder": ("Hóa đơn điện tử", "E-invoices"),
    # variables
    "var.sector": ("Ngành (VSIC)", "Sector (VSIC)"),
    "var.unit": ("Đơn vị hành chính", "Administrative unit"),
    "var.period": ("Cửa sổ tính tỷ lệ", "Adoption window"),
    "var.target": ("Mục tiêu", "Target"),
    "period.7": ("7 ngày", "7 days"),
    "period.28": ("28 ngày", "28 days"),
    "all": ("Tất cả", "All"),
    # overview
    "overview.totals": ("Kỳ đã chọn so với kỳ trước", "Chosen period against the one before"),
    "overview.by_unit": ("Tỷ lệ áp dụng theo đơn vị", "Adoption rate by unit"),
    "overview.by_sector": ("Tỷ lệ áp dụng theo ngành", "Adoption rate by sector"),
    "overview.heatmap": ("Ngành × đơn vị", "Sector × unit"),
    "overview.below_target": ("Các đơn vị thấp nhất so với mục tiêu", "Units furthest below target"),
    # trends
    "trends.adoption": ("Tỷ lệ áp dụng", "Adoption rate"),
    "trends.issuers": ("Doanh nghiệp, hộ kinh doanh xuất hóa đơn", "Issuing businesses"),
    "trends.invoices": ("Số hóa đơn mỗi ngày", "Invoices per day"),
    "trends.non_cash": ("Tỷ trọng thanh toán không dùng tiền mặt", "Non-cash share"),
    "trends.annotations": ("Cảnh báo", "Alerts"),
    # drill-down
    "drilldown.segments": ("Các phân khúc và mức nền", "Segments and their baselines"),
    "drilldown.baseline": ("Tỷ lệ xuất hóa đơn trong ngày so với mức nền", "Daily issuing share against baseline"),
    "drilldown.dormant": ("Người nộp thuế ngừng xuất hóa đơn", "Issuers gone silent"),
    # alerts
    "alerts.active": ("Đang cảnh báo", "Firing and pending"),
    "alerts.recent": ("Sự kiện gần đây", "Recent events"),
    "alerts.per_day": ("Cảnh báo mỗi ngày", "Alerts per day"),
    "alerts.silences": ("Tạm tắt cảnh báo", "Silences"),
    "alerts.deliveries": ("Gửi webhook", "Webhook deliveries"),
    # pipeline
    "pipeline.ingest_rate": ("Tốc độ nhận (sự kiện/giây)", "Ingest rate (events/s)"),
    "pipeline.dlq_rate": ("Bản ghi lỗi theo lý do (mỗi giây)", "Dead letters by reason (per second)"),
    "pipeline.consumer_lag": ("Độ trễ tiêu thụ (bản ghi)", "Consumer lag (records)"),
    "pipeline.watermark_delay": ("Watermark chậm hơn thời gian thực", "Watermark behind wall clock"),
    "pipeline.freshness": ("Dữ liệu mới nhất", "Newest data"),
    "pipeline.dlq_reasons": ("Bản ghi lỗi trong kỳ", "Dead letters in the period"),
    "pipeline.workers_up": ("Worker trả lời Prometheus (1 = có)", "Workers answering Prometheus (1 = yes)"),
    "pipeline.health_alerts": ("Cảnh báo hệ thống đang bật", "Pipeline health alerts firing"),
    "pipeline.latency_p99": ("Độ trễ xử lý p99 (giây)", "Processing latency p99 (s)"),
    "pipeline.group_lag_by_partition": ("Độ trễ theo phân vùng (theo broker)", "Lag by partition (as the broker says)"),
    # columns
    "col.unit_name": ("Đơn vị", "Unit"),
    "col.sector_name": ("Ngành", "Sector"),
    "col.sector": ("Ngành", "Sector"),
    "col.unit": ("Đơn vị", "Unit"),
    "col.adoption_rate": ("Tỷ lệ áp dụng", "Adoption rate"),
    "col.adoption_change": ("Thay đổi (điểm %)", "Change (pt)"),
    "col.adoption_7d": ("Tỷ lệ 7 ngày", "7-day rate"),
    "col.adoption_28d": ("Tỷ lệ 28 ngày", "28-day rate"),
    "col.issuing_share": ("Xuất hóa đơn trong ngày", "Issued that day"),
    "col.baseline_share": ("Mức nền", "Baseline"),
    "col.eligible": ("Thuộc diện áp dụng", "Eligible"),
    "col.active": ("Đang áp dụng", "Adopters"),
    "col.active_7d": ("Xuất HĐ trong 7 ngày", "Issued in 7 days"),
    "col.active_1d": ("Xuất HĐ trong ngày", "Issued that day"),
    "col.invoices": ("Số hóa đơn", "Invoices"),
    "col.invoices_change": ("Hóa đơn so với kỳ trước", "Invoices vs before"),
    "col.baseline_invoices": ("Mức nền hóa đơn", "Baseline invoices"),
    "col.invoices_vs_baseline": ("So với mức nền", "Against baseline"),
    "col.revenue_vnd": ("Doanh thu (VND)", "Revenue (VND)"),
    "col.non_cash_share": ("Không dùng tiền mặt", "Non-cash"),
    "col.gap": ("Còn thiếu so với mục tiêu", "Gap to target"),
    "col.not_issuing": ("Chưa xuất hóa đơn", "Not issuing"),
    "col.seller_id": ("Mã số thuế", "Tax code"),
    "col.seller_name": ("Tên", "Name"),
    "col.last_invoice_day": ("Hóa đơn cuối", "Last invoice"),
    "col.silent_days": ("Số ngày im lặng", "Silent days"),
    "col.usual_daily_invoices": ("HĐ/ngày thường lệ", "Usual invoices/day"),
    "col.rule": ("Quy tắc", "Rule"),
    "col.severity": ("Mức độ", "Severity"),
    "col.state": ("Trạng thái", "State"),
    "col.type": ("Loại", "Type"),
    "col.day": ("Ngày", "Day"),
    "col.started_day": ("Bắt đầu", "Started"),
    "col.fired_day": ("Báo từ", "Firing since"),
    "col.evaluated_day": ("Đánh giá ngày", "Evaluated day"),
    "col.held_days": ("Số ngày giữ", "Days held"),
    "col.suppressed_by": ("Bị chặn bởi", "Suppressed by"),
    "col.emitted_at": ("Phát lúc", "Emitted at"),
    "col.event_id": ("Mã sự kiện", "Event id"),
    "col.silence_id": ("Mã", "Id"),
    "col.matchers": ("Điều kiện", "Matchers"),
    "col.starts_at": ("Từ", "From"),
    "col.ends_at": ("Đến", "Until"),
    "col.created_by": ("Người tạo", "Created by"),
    "col.comment": ("Ghi chú", "Comment"),
    "col.endpoint": ("Điểm nhận", "Endpoint"),
    "col.delivered": ("Đã gửi", "Delivered"),
    "col.retries": ("Thử lại", "Retries"),
    "col.failed": ("Thất bại", "Failed"),
    "col.last_status": ("Mã HTTP cuối", "Last HTTP status"),
    "col.last_attempt": ("Lần cuối", "Last attempt"),
    "col.p95_latency_ms": ("Độ trễ p95 (ms)", "p95 latency (ms)"),
    "col.endpoint_state": ("Tình trạng", "State"),
    "col.per_second": ("Mỗi giây", "Per second"),
    "col.reason": ("Lý do", "Reason"),
    "col.topic": ("Topic", "Topic"),
    "col.rejected": ("Bản ghi lỗi", "Dead letters"),
    "col.consumer_lag": ("Độ trễ", "Lag"),
    "col.watermark_delay_s": ("Chậm (giây)", "Behind (s)"),
    "col.newest_issued_at": ("Hóa đơn mới nhất (giờ lập)", "Newest issue time"),
    "col.newest_received_at": ("Nhận mới nhất", "Newest receive time"),
    "col.watermark": ("Watermark", "Watermark"),
    "col.last_evaluated_day": ("Ngày đã đánh giá", "Last evaluated day"),
    "col.events": ("Sự kiện", "Events"),
    "col.text": ("Nội dung", "Text"),
    "col.tags": ("Nhãn", "Tags"),
    # report
    "report.title": ("Báo cáo áp dụng hóa đơn điện tử từ máy tính tiền", "Cash-register e-invoice adoption report"),
    "report.period": ("Kỳ báo cáo", "Period"),
    "report.generated": ("Lập lúc", "Generated"),
    "report.scope": ("Phạm vi", "Scope"),
    "report.none": ("Không có", "None"),
    "report.no_comparison": (
        "— : kỳ trước (hoặc mức nền) không có dữ liệu, không có gì để so sánh",
        "— : the period before (or the baseline) has no data, there is nothing to compare with",
    ),
}


def t(key: str, lang: str) -> str:
    """The text of ``key`` in ``lang`` ('vi' or 'en')."""
    if lang not in LANGUAGES:
        raise ValueError(f"language must be one of {', '.join(LANGUAGES)}, not {lang!r}")
    vi, en = TEXT[key]
    return vi if lang == "vi" else en


def column(name: str, lang: str) -> str:
    """The display name of a query column; the column name itself when there is none."""
    return t(f"col.{name}", lang) if f"col.{name}" in TEXT else name
