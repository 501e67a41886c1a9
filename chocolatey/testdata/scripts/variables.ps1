$packageName  = 'example-browser'
$version      = $env:ChocolateyPackageVersion
$installerType = 'msi'
$silentArgs   = "/quiet /norestart /l*v `"$($env:TEMP)\$($packageName).$($env:chocolateyPackageVersion).MsiInstall.log`""
$url          = "https://dl.example.com/browser/$version/ExampleBrowser-${version}-x86.msi"
$url64        = "https://dl.example.com/browser/$($version)/ExampleBrowser-$version-x64.msi"
$validExitCodes = @(0, 3010, 1641)

$params = @{
  PackageName    = $packageName
  FileType       = $installerType
  SilentArgs     = $silentArgs
  Url            = $url
  Url64bit       = $url64
  Checksum       = '4444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444a'
  ChecksumType   = 'SHA512'
  Checksum64     = '5555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555b'
  ValidExitCodes = $validExitCodes
}

if (Get-OSArchitectureWidth -compare 32) { Write-Host 'installing the 32-bit browser' }
Install-ChocolateyPackage @params -ChecksumType64 'sha512'
