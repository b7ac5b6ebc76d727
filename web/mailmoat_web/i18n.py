"""Portal text in Japanese and English: dict catalogs, symbol → sentence, and language choice."""

from __future__ import annotations

from collections.abc import Callable, Mapping

LANGUAGES = ("ja", "en")
LANG_COOKIE = "mm_lang"

CATALOG: dict[str, dict[str, str]] = {
    "ja": {
        "title": "隔離された添付ファイル",
        "home.body": "隔離された添付ファイルは、通知メールのリンクから確認できます。",
        "notfound.title": "見つかりません",
        "notfound.body": "このリンクは無効か、有効期限が切れています。",
        "forbidden.title": "リクエストを処理できません",
        "forbidden.body": "ページの有効期限が切れた可能性があります。"
                          "ページを再読み込みしてからもう一度お試しください。",
        "message.heading": "メッセージ",
        "message.from": "差出人",
        "message.subject": "件名",
        "message.date": "日付",
        "message.expires": "有効期限",
        "route.heading": "経路",
        "route.unknown": "不明",
        "route.warning": "このメールは複数の国を経由して届きました（{countries}）。"
                         "差出人に心当たりがない場合は注意してください。",
        "files.heading": "添付ファイル",
        "file.size": "{size} バイト",
        "file.reasons": "判定理由",
        "file.deleted": "このファイルは危険と判定されたため削除されました。ダウンロードできません。",
        "file.no_download": "このファイルはダウンロードできません。",
        "verdict.safe": "安全",
        "verdict.risky": "注意",
        "verdict.encrypted": "暗号化",
        "verdict.unsupported": "確認不可",
        "verdict.danger": "危険",
        "verdict.analysing": "解析中",
        "file.analysing": "サンドボックスで解析中です。結果が出るまでダウンロードできません。",
        "file.sandbox_timeout": "サンドボックスでの解析が時間内に終わりませんでした。"
                                "このファイルはダウンロードできません。",
        "action.original": "元のファイルをダウンロード",
        "action.macro_removed": "マクロを削除したファイルをダウンロード（{name}）",
        "action.pdf": "PDF に変換してダウンロード",
        "file.pdf_failed": "このファイルは PDF に変換できませんでした。",
        "file.original_network": "元のファイルは登録されたネットワークからのみダウンロードできます。"
                                 "PDF に変換したファイルはどこからでもダウンロードできます。",
        "action.unlock": "パスワードを入力して確認",
        "action.password": "パスワード",
        "action.download": "ダウンロード",
        "action.confirm": "危険性を理解したうえでダウンロードする",
        "action.back": "戻る",
        "action.preview": "プレビュー",
        "action.safe": "安全化したファイルをダウンロード",
        "preview.title": "プレビュー",
        "preview.note": "ファイルを開かずに内容を確認できるよう、"
                        "画像または文字だけに変換して表示しています。",
        "preview.truncated": "最初の部分だけを表示しています。",
        "preview.failed": "このファイルはプレビューできません。",
        "unlock.ok": "パスワードで開き、内容を再検査しました。",
        "unlock.wrong": "パスワードが違います。",
        "unlock.unsupported": "この形式はここでは復号できません。",
        "unlock.limited": "パスワードの入力回数が上限に達しました。しばらくしてからお試しください。",
        "unlock.members": "内容",
        "ppap.follow_up": "後から届いたメールに書かれていたパスワードでこのファイルを開き、"
                          "中身を検査しました。",
        "ppap.same_mail": "メールに書かれていたパスワードでこのファイルを開き、中身を検査しました。",
        "unlock.document": "復号したファイル",
        "unlock.pending": "ウイルス検査中のファイルがあります。"
                          "1分ほどしてから「もう一度確認」を押してください。",
        "verdict.pending": "検査中",
        "action.recheck": "もう一度確認",
        "warning.title": "注意が必要なファイルです",
        "warning.body": "このファイルは安全と確認できませんでした。"
                        "差出人と内容に心当たりがある場合のみダウンロードしてください。",
        "lang.switch": "English",
        "reason.generic": "確認項目 {symbol} に該当しました。",
    },
    "en": {
        "title": "Isolated attachments",
        "home.body": "Isolated attachments are reached through the link in the "
                     "notice you received.",
        "notfound.title": "Not found",
        "notfound.body": "This link is invalid or has expired.",
        "forbidden.title": "The request cannot be processed",
        "forbidden.body": "The page may have expired. Reload the page and try again.",
        "message.heading": "Message",
        "message.from": "From",
        "message.subject": "Subject",
        "message.date": "Date",
        "message.expires": "Available until",
        "route.heading": "Route",
        "route.unknown": "unknown",
        "route.warning": "This message crossed several countries on its way ({countries}). "
                         "Be careful if you do not know the sender.",
        "files.heading": "Attachments",
        "file.size": "{size} bytes",
        "file.reasons": "Why",
        "file.deleted": "This file was judged dangerous and has been deleted. It "
                        "cannot be downloaded.",
        "file.no_download": "This file cannot be downloaded.",
        "verdict.safe": "Safe",
        "verdict.risky": "Caution",
        "verdict.encrypted": "Encrypted",
        "verdict.unsupported": "Cannot be checked",
        "verdict.danger": "Dangerous",
        "verdict.analysing": "Being analysed",
        "file.analysing": "Being analysed in a sandbox; no download until the verdict.",
        "file.sandbox_timeout": "The sandbox gave no verdict in time; this file cannot be "
                                "downloaded.",
        "action.original": "Download the original file",
        "action.macro_removed": "Download without macros ({name})",
        "action.pdf": "Download as PDF",
        "file.pdf_failed": "This file could not be converted to PDF.",
        "file.original_network": "The original file can be downloaded only from registered "
                                 "networks. The PDF copy can be downloaded from anywhere.",
        "action.unlock": "Enter the password to check it",
        "action.password": "Password",
        "action.download": "Download",
        "action.confirm": "I understand the risk; download it",
        "action.back": "Back",
        "action.preview": "Preview",
        "action.safe": "Download a safe copy",
        "preview.title": "Preview",
        "preview.note": "Shown as images or plain text only, so you can look at it without opening the file.",
        "preview.truncated": "Only the beginning is shown.",
        "preview.failed": "This file cannot be previewed.",
        "unlock.ok": "Opened with the password and checked again.",
        "unlock.wrong": "The password is not correct.",
        "unlock.unsupported": "This format cannot be decrypted here.",
        "unlock.limited": "Too many password attempts. Try again later.",
        "unlock.members": "Contents",
        "ppap.follow_up": "The password from your follow-up mail opened it, and its contents were checked.",
        "ppap.same_mail": "The password written in the mail opened it, and its contents were checked.",
        "unlock.document": "Decrypted file",
        "unlock.pending": "Some files are being checked for viruses. Wait a minute, then press "
                          "\"Check again\".",
        "verdict.pending": "Being checked",
        "action.recheck": "Check again",
        "warning.title": "This file needs caution",
        "warning.body": "This file could not be confirmed safe. Download it only if you know the "
                        "sender and expected this file.",
        "lang.switch": "日本語",
        "reason.generic": "Matched the check {symbol}.",
    },
}

REASONS: dict[str, dict[str, str]] = {
    "ja": {
        "ENCRYPTED_ARCHIVE": "パスワード付きの圧縮ファイルのため、中身を検査できません。",
        "CONVERTED_TO_PDF": "安全のため PDF に変換してメールに添付しました。",
        "PPAP_OPENED": "メールに書かれていたパスワードで開き、中身を検査しました。",
        "PPAP_PASSWORD_USED": "このメールのパスワードで、先に届いたメールの添付ファイルを開きました。",
        "PPAP_FAILED": "パスワード付きメールとの照合を実行できませんでした。",
        "CONVERT_FAILED": "PDF に変換できなかったため、元のファイルを分離しました。",
        "CONVERT_UNAVAILABLE": "変換できなかったため、元のファイルを分離しました。",
        "ENCRYPTED_OFFICE": "パスワードで保護された Office 文書のため、中身を検査できません。",
        "ENCRYPTED_OFFICE_LEGACY": "古い形式（Office 97–2003）のパスワード付き文書で、"
                                   "ここでは復号できません。",
        "ENCRYPTED_PDF": "パスワードで保護された PDF のため、中身を検査できません。",
        "VELVETSWEATSHOP": "検査を逃れるための既知の手口（Excel の"
                           "既定パスワードによる暗号化）が使われています。",
        "VIRUS": "ウイルス対策エンジンがマルウェアを検出しました。",
        "SANDBOX_MALICIOUS": "サンドボックスでの実行結果が悪意のある動作を示しました。",
        "SANDBOX_SUSPICIOUS": "サンドボックスでの実行結果に不審な動作がありました。",
        "SANDBOX_ANALYSING": "サンドボックスで実行して確認しています。",
        "SANDBOX_TIMEOUT": "サンドボックスでの解析が時間内に終わりませんでした。",
        "SANDBOX_CLEAN": "サンドボックスで実行し、不審な動作はありませんでした。",
        "SANDBOX_XLM_EXEC": ("Excel 4.0 マクロを模擬実行したところ、"
                             "プログラムを実行またはダウンロードします。"),
        "SANDBOX_XLM_URL": "Excel 4.0 マクロを模擬実行したところ、外部の URL に接続します。",
        "SANDBOX_XLM_AUTO": "ファイルを開くと自動で実行される Excel 4.0 マクロが含まれています。",
        "SANDBOX_VBA_IOC": ("マクロの難読化を解除したところ、URL や IP アドレス、"
                            "実行ファイル名が見つかりました。"),
        "SANDBOX_YARA": "検知ルール（YARA）に一致しました。",
        "SANDBOX_YARA_DANGER": "危険なファイルを示す検知ルール（YARA）に一致しました。",
        "DANGEROUS_EXTENSION": "実行ファイルやスクリプトなど、危険な種類のファイルです。",
        "ARCHIVE_TYPE": "検査対象として隔離される種類の圧縮ファイルです。",
        "EXT_MISMATCH": "ファイル名の拡張子と実際のファイルの種類が一致しません。",
        "NO_EXTENSION": "ファイル名に拡張子がありません。",
        "DOUBLE_EXTENSION": "拡張子が二重になっており、ファイルの種類を偽装している可能性があります。",
        "FILENAME_RLO": "ファイル名に表示を反転させる特殊文字が含まれています。",
        "FILENAME_TRAILING_DOT": "ファイル名の末尾が不自然です（拡張子の偽装の可能性）。",
        "FILENAME_MISMATCH": "メールに記載された2つのファイル名が一致しません。",
        "MACRO": "マクロ（VBA）が含まれています。",
        "MACRO_AUTOEXEC": "開いただけで自動実行されるマクロが含まれています。",
        "MACRO_SUSPICIOUS": "不審な処理を行うマクロが含まれています。",
        "XLM_MACRO": "Excel 4.0（XLM）マクロが含まれています。",
        "VBA_STOMPING": "マクロのソースと実行コードが食い違っています（VBA stomping）。",
        "DDE": "DDE（外部プログラムの起動）を含む文書です。",
        "REMOTE_TEMPLATE": "外部のテンプレートを読み込む設定があります。",
        "PDF_ACTIVE_CONTENT": "PDF に自動で動作する内容が含まれています。",
        "PDF_JAVASCRIPT": "PDF に JavaScript が含まれています。",
        "PDF_OPENACTION": "PDF を開いたときに自動で実行される動作があります。",
        "PDF_AA": "PDF に自動実行される動作があります。",
        "PDF_LAUNCH": "PDF に外部プログラムを起動する動作があります。",
        "PDF_ACTION": "PDF に動作（アクション）が含まれています。",
        "PDF_EMBEDDED_FILE": "PDF の中に別のファイルが埋め込まれています。",
        "PDF_FILE_URI": "PDF がローカルファイルやネットワーク共有を参照しています。",
        "PDF_XFA": "PDF に XFA フォームが含まれています。",
        "PDF_RICHMEDIA": "PDF にリッチメディア（Flash・動画）が含まれています。",
        "PDF_ACROFORM": "PDF に入力フォームが含まれています。",
        "HTML_ACTIVE_CONTENT": "開くと動作する HTML / SVG（スクリプト、フォーム送信、自動転送など）です。",
        "ENCRYPTION_SPIN_LIMIT": "パスワードの検証に過大な計算を求める暗号化文書のため、検査できません。",
        "PDF_UNREADABLE": "PDF を解析できませんでした。",
        "ARCHIVE_LIMIT": "圧縮ファイルが大きすぎるか深すぎるため、最後まで検査できませんでした。",
        "ARCHIVE_CORRUPT": "圧縮ファイルが壊れています。",
        "PATH_TRAVERSAL": "圧縮ファイル内に不正なパスを持つファイルがあります。",
        "SCAN_FAILED": "検査を完了できませんでした。",
        "AV_UNCHECKED": "このファイルはウイルス検査がまだ済んでいません。検査に合格するまで隔離されたままで、"
                        "ダウンロードできません。必要な場合は管理者にお問い合わせください。",
        "AV_PENDING": "このファイルはウイルス検査中です。検査が終わるまでダウンロードできません。",
        "NFKC": "ファイル名に紛らわしい文字が含まれています。",
    },
    "en": {
        "CONVERTED_TO_PDF": "It was converted to PDF for safety and attached to the message.",
        "PPAP_OPENED": "The password written in the mail opened it; its contents were checked.",
        "PPAP_PASSWORD_USED": "The password in this mail opened the attachment of an earlier mail.",
        "PPAP_FAILED": "Matching with a password mail could not run.",
        "CONVERT_FAILED": "It could not be converted to PDF, so the original was isolated.",
        "CONVERT_UNAVAILABLE": "It could not be converted, so the original was isolated.",
        "ENCRYPTED_ARCHIVE": "It is a password-protected archive, so its contents "
                             "could not be checked.",
        "ENCRYPTED_OFFICE": "It is a password-protected Office document, so its contents "
                            "could not be checked.",
        "ENCRYPTED_OFFICE_LEGACY": "It is an old-format (Office 97–2003) document with a password, "
                                   "which cannot be decrypted here.",
        "ENCRYPTED_PDF": "It is a password-protected PDF, so its contents could not be checked.",
        "VELVETSWEATSHOP": "It uses a known trick to hide from scanners (Excel's "
                           "built-in password).",
        "VIRUS": "The antivirus engine found malware.",
        "SANDBOX_MALICIOUS": "Running it in a sandbox showed malicious behaviour.",
        "SANDBOX_SUSPICIOUS": "Running it in a sandbox showed suspicious behaviour.",
        "SANDBOX_ANALYSING": "It is being run in a sandbox to check it.",
        "SANDBOX_TIMEOUT": "The sandbox gave no verdict in time.",
        "SANDBOX_CLEAN": "Run in a sandbox, it showed nothing suspicious.",
        "SANDBOX_XLM_EXEC": "Its Excel 4.0 macros, when emulated, run or download a program.",
        "SANDBOX_XLM_URL": "Its Excel 4.0 macros, when emulated, contact an outside URL.",
        "SANDBOX_XLM_AUTO": "It contains Excel 4.0 macros that run when the file is opened.",
        "SANDBOX_VBA_IOC": "Its macros, once deobfuscated, name URLs, IP addresses or programs.",
        "SANDBOX_YARA": "It matches a detection (YARA) rule.",
        "SANDBOX_YARA_DANGER": "It matches a detection (YARA) rule for dangerous files.",
        "DANGEROUS_EXTENSION": "It is a dangerous kind of file, such as a program or a script.",
        "ARCHIVE_TYPE": "It is a kind of archive that is isolated for checking.",
        "EXT_MISMATCH": "The file name's extension does not match what the file really is.",
        "NO_EXTENSION": "The file name has no extension.",
        "DOUBLE_EXTENSION": "The name has two extensions, which can disguise the file's type.",
        "FILENAME_RLO": "The name contains a character that reverses how it is displayed.",
        "FILENAME_TRAILING_DOT": "The name ends oddly, which can disguise the file's type.",
        "FILENAME_MISMATCH": "The message gives two different names for this file.",
        "MACRO": "It contains macros (VBA).",
        "MACRO_AUTOEXEC": "It contains macros that run as soon as it is opened.",
        "MACRO_SUSPICIOUS": "It contains macros that do suspicious things.",
        "XLM_MACRO": "It contains Excel 4.0 (XLM) macros.",
        "VBA_STOMPING": "The macro source and its compiled code disagree (VBA stomping).",
        "DDE": "It uses DDE, which can start other programs.",
        "REMOTE_TEMPLATE": "It loads a template from elsewhere.",
        "PDF_ACTIVE_CONTENT": "The PDF contains content that acts on its own.",
        "PDF_JAVASCRIPT": "The PDF contains JavaScript.",
        "PDF_OPENACTION": "The PDF does something automatically when opened.",
        "PDF_AA": "The PDF has automatic actions.",
        "PDF_LAUNCH": "The PDF can start another program.",
        "PDF_ACTION": "The PDF contains actions.",
        "PDF_EMBEDDED_FILE": "Another file is embedded in the PDF.",
        "PDF_FILE_URI": "The PDF refers to local files or network shares.",
        "PDF_XFA": "The PDF contains an XFA form.",
        "PDF_RICHMEDIA": "The PDF contains rich media (Flash, video).",
        "PDF_ACROFORM": "The PDF contains an interactive form.",
        "HTML_ACTIVE_CONTENT": "It is HTML or SVG that acts when opened (script, a form that sends "
                               "data elsewhere, a redirect …).",
        "ENCRYPTION_SPIN_LIMIT": "It is encrypted so that checking a password would take minutes, "
                                 "so it cannot be checked.",
        "PDF_UNREADABLE": "The PDF could not be analysed.",
        "ARCHIVE_LIMIT": "The archive is too large or too deep to be checked to the end.",
        "ARCHIVE_CORRUPT": "The archive is damaged.",
        "PATH_TRAVERSAL": "A file in the archive has an unsafe path.",
        "SCAN_FAILED": "The check could not be completed.",
        "AV_UNCHECKED": "This file is still to be checked for viruses; it stays isolated and "
                        "cannot be downloaded until it has passed. Ask your administrator if "
                        "you need it.",
        "AV_PENDING": "This file is being checked for viruses; it cannot be downloaded until "
                      "the check is done.",
        "NFKC": "The name contains look-alike characters.",
    },
}

# Symbols that describe, but are no reason to worry the recipient with.
QUIET = frozenset({"AV_CLEAN", "AV_DISABLED", "ARCHIVE", "PDF_OWNER_PASSWORD", "OFFICE_PROTECTION"})


def register_catalog(extra: Mapping[str, Mapping[str, str]]) -> None:
    """Feature modules (admin console, keep-mail, spam digest) add their keys at import.
    One catalog for the whole web app: a key may be defined once only."""
    for lang, entries in extra.items():
        table = CATALOG.setdefault(lang, {})
        clash = sorted(set(entries) & set(table))
        if clash:
            raise ValueError(f"catalog keys defined twice: {clash[:5]}")
        table.update(entries)


def translator(lang: str) -> Callable[..., str]:
    table = CATALOG.get(lang, CATALOG["ja"])

    def gettext(key: str, **values: object) -> str:
        text = table.get(key) or CATALOG["en"].get(key) or key
        return text.format(**values) if values else text

    return gettext


def reasons(symbols: list[str], lang: str) -> list[str]:
    """Plain sentences for the symbols, each once, in the order found."""
    table = REASONS.get(lang, REASONS["ja"])
    out: list[str] = []
    for symbol in symbols:
        if symbol in QUIET:
            continue
        sentence = table.get(symbol) or translator(lang)("reason.generic", symbol=symbol)
        if sentence not in out:
            out.append(sentence)
    return out


def negotiate(query: str | None, cookie: str | None, accept_language: str | None,
              default: str) -> str:
    """?lang= first, then the cookie, then the browser's Accept-Language, then the tenant's."""
    for choice in (query, cookie):
        if choice in LANGUAGES:
            return choice
    if accept_language:
        ranked: list[tuple[float, int, str]] = []
        for i, item in enumerate(accept_language.split(",")[:20]):
            tag, _, params = item.strip().partition(";")
            q = 1.0
            if params.strip().startswith("q="):
                try:
                    q = float(params.strip()[2:])
                except ValueError:
                    q = 0.0
            primary = tag.strip().lower().split("-")[0]
            if primary in LANGUAGES and q > 0:
                ranked.append((-q, i, primary))
        if ranked:
            return sorted(ranked)[0][2]
    return default if default in LANGUAGES else "ja"


def flag(country: str | None) -> str:
    """Regional-indicator emoji for an ISO 3166 alpha-2 code ("JP" → 🇯🇵); empty otherwise."""
    if not country or len(country) != 2 or not country.isascii() or not country.isalpha():
        return ""
    return "".join(chr(0x1F1E6 + ord(c) - ord("A")) for c in country.upper())


def verdict_words(lang: str) -> Mapping[str, str]:
    t = translator(lang)
    return {v: t(f"verdict.{v}")
            for v in ("safe", "risky", "encrypted", "unsupported", "analysing", "danger")}
