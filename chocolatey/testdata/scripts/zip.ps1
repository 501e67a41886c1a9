$ErrorActionPreference = 'Stop'
$packageName = 'example-cli'
$toolsDir = "$(Split-Path -parent $MyInvocation.MyCommand.Definition)"
$url = 'https://downloads.example.org/cli/2.4.1/example-cli_2.4.1_windows_386.zip'
$url64 = 'https://downloads.example.org/cli/2.4.1/example-cli_2.4.1_windows_amd64.zip'
$checksum = '2222222222222222222222222222222222222222222222222222222222222222'
$checksum64 = '3333333333333333333333333333333333333333333333333333333333333333'

# Remove old versions
Get-ChildItem -Path $toolsDir -Filter '*.exe' | Remove-Item -Force -ErrorAction SilentlyContinue

Install-ChocolateyZipPackage -PackageName "$packageName" `
                             -Url "$url" `
                             -UnzipLocation "$toolsDir" `
                             -Url64 "$url64" `
                             -Checksum "$checksum" `
                             -ChecksumType 'sha256' `
                             -Checksum64 "$checksum64" `
                             -ChecksumType64 'sha256'
