$ErrorActionPreference = 'Stop'
$release = Invoke-RestMethod 'https://api.example.com/releases/latest'
$url = $release.assets | Where-Object name -like '*.exe' | Select-Object -First 1 -ExpandProperty browser_download_url
$url2 = 'https://example.com/{0}/setup.exe' -f $env:ChocolateyPackageVersion
Install-ChocolateyPackage -PackageName 'dynamic' -FileType 'exe' -Url $url -Checksum '9999999999999999999999999999999999999999999999999999999999999999' -ChecksumType 'sha256'
Install-ChocolateyPackage -PackageName 'dynamic2' -FileType 'exe' -Url $url2 -Checksum '9999999999999999999999999999999999999999999999999999999999999998' -ChecksumType 'sha256'
