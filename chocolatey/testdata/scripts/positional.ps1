$packageName = 'oldtool'
$installerType = 'exe'
$url = 'http://www.example.net/files/oldtool-setup-1.0.exe'
$url64 = $url
$silentArgs = '/VERYSILENT /SUPPRESSMSGBOXES /NORESTART'
$validExitCodes = @(0)

Install-ChocolateyPackage "$packageName" "$installerType" "$silentArgs" "$url" "$url64" -validExitCodes $validExitCodes -checksum '6666666666666666666666666666666666666666666666666666666666666666' -checksumType 'sha256' -checksum64 '6666666666666666666666666666666666666666666666666666666666666666'
