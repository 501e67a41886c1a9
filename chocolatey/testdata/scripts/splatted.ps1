$ErrorActionPreference = 'Stop'; # stop on all errors
$toolsDir   = "$(Split-Path -parent $MyInvocation.MyCommand.Definition)"

$packageArgs = @{
  packageName    = $env:ChocolateyPackageName
  unzipLocation  = $toolsDir
  fileType       = 'EXE'
  url            = 'https://github.com/example/notepad-plus/releases/download/v8.6.2/npp.8.6.2.Installer.exe'
  url64bit       = 'https://github.com/example/notepad-plus/releases/download/v8.6.2/npp.8.6.2.Installer.x64.exe'

  softwareName   = 'Notepad++*'

  checksum       = 'D5F2D3DE1C3F0C4E5E2B0F9C2A7E6B8D1F0A3C4B5E6D7C8B9A0F1E2D3C4B5A69'
  checksumType   = 'sha256'
  checksum64     = '1111111111111111111111111111111111111111111111111111111111111111'
  checksumType64 = 'sha256'

  silentArgs     = "/S"
  validExitCodes = @(0, 3010, 1641)
}

Install-ChocolateyPackage @packageArgs # https://docs.chocolatey.org/en-us/create/functions/install-chocolateypackage
