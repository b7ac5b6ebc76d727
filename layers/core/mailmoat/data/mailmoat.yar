// mailmoat's own YARA-X rules (issue 16 item 3): what DESIGN names as active content in mail.
// Each rule has a positive and a negative test in tests/detection/test_yara.py. An operator's
// rules (MAILMOAT_YARA_RULES_DIR) are compiled beside these, never in place of them.
// meta verdict: "danger" or "risky" (the default); description: shown in the finding.

rule mailmoat_executable_in_document {
    meta:
        description = "a PE, ELF or Mach-O executable embedded inside a document"
        verdict = "risky"
    strings:
        $pe = "This program cannot be run in DOS mode"
        $elf = { 7F 45 4C 46 (01 | 02) (01 | 02) 01 }
        $macho64 = { CF FA ED FE (07 | 0C) 00 00 01 }
        $macho32 = { CE FA ED FE (07 | 0C) 00 00 00 }
    condition:
        // OLE compound file, PDF or RTF: carriers that keep an embedded object's bytes as they are
        (uint32(0) == 0xE011CFD0 or uint32(0) == 0x46445025 or uint32(0) == 0x74725C7B)
        and (for any i in (1..#pe) : (uint16(@pe[i] - 0x4E) == 0x5A4D)
             or $elf in (1..filesize) or $macho64 in (1..filesize) or $macho32 in (1..filesize))
}

rule mailmoat_powershell_download_cradle {
    meta:
        description = "PowerShell that downloads and runs code"
        verdict = "danger"
    strings:
        $ps = /powershell(\.exe)?["']?\s/ nocase
        $dl1 = "DownloadString" nocase
        $dl2 = "DownloadFile" nocase
        $dl3 = "DownloadData" nocase
        $dl4 = /Invoke-WebRequest|\biwr\s+(-uri\s+)?["']?https?:/ nocase
        $dl5 = "Start-BitsTransfer" nocase
        $dl6 = /Invoke-RestMethod|\birm\s+(-uri\s+)?["']?https?:/ nocase
        $run1 = /\b(IEX|Invoke-Expression)\b/ nocase
        $run2 = /Start-Process|\.exe\b/ nocase
        $enc = /\s-e(nc|ncodedcommand)?\s+[A-Za-z0-9+\/]{40,}={0,2}/ nocase
    condition:
        $ps and ((any of ($dl*) and any of ($run*)) or $enc)
}

rule mailmoat_lolbin_remote_script {
    meta:
        description = "mshta, regsvr32, rundll32 or certutil told to fetch or run remote script"
        verdict = "danger"
    strings:
        $mshta_url = /mshta(\.exe)?["']?\s+["']?(https?:|\\\\)/ nocase
        $mshta_script = /mshta(\.exe)?["']?\s+["']?(vbscript|javascript):/ nocase
        $squiblydoo = /regsvr32(\.exe)?["']?\s+[^\r\n]{0,80}\/i:\s*["']?(https?:|\\\\)/ nocase
        $rundll_js = /rundll32(\.exe)?["']?\s+[^\r\n]{0,40}javascript:/ nocase
        $certutil = /certutil(\.exe)?["']?\s+[^\r\n]{0,40}-urlcache\s[^\r\n]{0,40}https?:/ nocase
    condition:
        any of them
}

rule mailmoat_html_smuggling {
    meta:
        description = "HTML smuggling: a file decoded from base64 in the page and handed to the browser as a download"
        verdict = "risky"
    strings:
        $atob = "atob(" nocase
        $blob = /new\s+Blob\s*\(/
        $save = "msSaveOrOpenBlob"
        $url = "createObjectURL"
        $download = /\.download\s*=|\bdownload\s*=\s*["']|setAttribute\(\s*["']download["']/
    condition:
        $atob and $blob and ($save or ($url and $download))
}

rule mailmoat_disk_image_with_lnk {
    meta:
        description = "an ISO/UDF disk image (.iso, .img) carrying a Windows shortcut (.lnk)"
        verdict = "risky"
    strings:
        // ShellLinkHeader: HeaderSize 0x4C, then LinkCLSID 00021401-0000-0000-C000-000000000046
        $lnk = { 4C 00 00 00 01 14 02 00 00 00 00 00 C0 00 00 00 00 00 00 46 }
        $name_iso = /[A-Z0-9_~!#$%&'()\-@^{}]{1,8}\.LNK;1/
        $name_joliet = { 00 2E 00 6C 00 6E 00 6B }  // ".lnk" in a Joliet (UTF-16BE) name
    condition:
        (uint32be(0x8001) == 0x43443030 and uint8(0x8005) == 0x31       // "CD001"
         or uint32be(0x8001) == 0x42454130 and uint8(0x8005) == 0x31)   // "BEA01" (UDF)
        and ($lnk or $name_iso or $name_joliet)
}
