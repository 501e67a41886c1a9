$ErrorActionPreference = 'Stop'
$toolsPath = Split-Path $MyInvocation.MyCommand.Definition

$packageArgs = @{
  packageName  = 'fonttool'
  fileFullPath = "$toolsPath\fonttool.exe"
  url          = 'https://cdn.example.io/fonttool/fonttool-3.2.exe'
  checksum     = '7777777777777777777777777777777777777777777777777777777777777777'
  checksumType = 'sha256'
}
$packageArgs.url64bit = 'https://cdn.example.io/fonttool/fonttool-3.2-x64.exe'
$packageArgs['checksum64'] = '8888888888888888888888888888888888888888888888888888888888888888'
$packageArgs.checksumType64 = 'sha256'

$file = Get-ChocolateyWebFile @packageArgs
Install-ChocolateyInstallPackage -PackageName 'fonttool' -FileType 'exe' -File $file -SilentArgs '/S'
Remove-Item $file -Force -ea 0
